//! A WebSocket connection's dealings with the app's hooks, which the connection loop polls: its
//! messages waiting for the publish hook's judgement (called concurrently, answered in the order
//! they were sent, so that they are stored in that order), and, when the connect hook vouched for
//! it for a while (`expires_in`), asking again before that runs out.
//!
//! A connection with no hook to deal with has none of this (`Option<Box<Hooked>>` is one word).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};

use crate::auth::Identity;
use crate::hooks::{ConnectHook, ConnectRequest, Judgement, PublishHook, Transport, Verdict};
use crate::message::Draft;
use crate::store::now_ms;

/// How long before a retry when the connect hook could not be asked about a connection.
const RENEWAL_RETRY: Duration = Duration::from_secs(5);

pub struct Hooked {
    /// The publish hook, for this caller (the server key's messages are not judged).
    publish: Option<Arc<PublishHook>>,
    /// Messages sent to the publish hook, with their sizes, in the order the client sent them.
    judging: FuturesOrdered<BoxFuture<'static, (Judgement, usize)>>,
    /// The connect hook asked again before its answer runs out, and what to ask it.
    renewal: Option<Pin<Box<dyn Future<Output = Renewal> + Send>>>,
    asked: Option<(Arc<ConnectHook>, ConnectRequest)>,
}

/// What the connect hook said when asked again.
pub enum Renewal {
    /// Still admitted, until the new identity's expiry.
    Extended(Identity),
    /// Refused, or not answered before the answer ran out: the connection closes (4001).
    Ended,
}

/// Something for the connection to act on.
pub enum HookNews {
    /// The publish hook's judgement on the oldest message waiting, and its size.
    Judged(Judgement, usize),
    Renewed(Renewal),
}

impl Hooked {
    /// What a new connection must deal with, if anything.
    pub fn new(
        publish: Option<Arc<PublishHook>>,
        connect: Option<&Arc<ConnectHook>>,
        identity: &Identity,
        asked: Option<ConnectRequest>,
    ) -> Option<Box<Self>> {
        let asked = match (connect, asked, identity.expires) {
            (Some(hook), Some(request), Some(_)) => Some((hook.clone(), request)),
            _ => None,
        };
        (publish.is_some() || asked.is_some()).then(|| {
            let mut hooked = Box::new(Self {
                publish,
                judging: FuturesOrdered::new(),
                renewal: None,
                asked,
            });
            hooked.renew_before(identity);
            hooked
        })
    }

    /// Sends `draft` to the publish hook, if this connection's messages go there; else gives
    /// it back, to be published at once.
    pub fn judge(&mut self, draft: Draft, bytes: usize) -> Option<Draft> {
        let Some(hook) = &self.publish else {
            return Some(draft);
        };
        let judging = hook.clone().judge(draft, Transport::WebSocket);
        self.judging
            .push_back(judging.map(move |judgement| (judgement, bytes)).boxed());
        None
    }

    /// Messages waiting for the publish hook.
    pub fn waiting(&self) -> usize {
        self.judging.len()
    }

    /// Nothing waits for a hook, and no renewal is due later (it is a timer of its own).
    pub fn is_quiet(&self) -> bool {
        self.judging.is_empty() && self.renewal.is_none()
    }

    /// The next thing to act on, if one is ready.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<HookNews> {
        if let Poll::Ready(Some((judgement, bytes))) = self.judging.poll_next_unpin(cx) {
            return Poll::Ready(HookNews::Judged(judgement, bytes));
        }
        if let Some(renewal) = &mut self.renewal
            && let Poll::Ready(renewed) = renewal.as_mut().poll(cx)
        {
            self.renewal = None;
            if let Renewal::Extended(identity) = &renewed {
                self.renew_before(identity);
            }
            return Poll::Ready(HookNews::Renewed(renewed));
        }
        Poll::Pending
    }

    /// Asks the connect hook again before `identity` expires (if it does).
    fn renew_before(&mut self, identity: &Identity) {
        if let (Some((hook, request)), Some(expires)) = (&self.asked, identity.expires) {
            self.renewal = Some(renew(hook.clone(), request.clone(), expires).boxed());
        }
    }
}

/// Waits until 80% of the time to `expires` has gone, then asks the connect hook again (not
/// from its cache), retrying every few seconds while it cannot be asked, until `expires`.
async fn renew(hook: Arc<ConnectHook>, request: ConnectRequest, expires: u64) -> Renewal {
    let left_ms = (expires * 1000).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(left_ms - left_ms / 5)).await;
    loop {
        match hook.ask_fresh(request.clone()).await.as_deref() {
            Ok(Verdict::Admitted(admission)) => return Renewal::Extended(admission.identity()),
            Ok(Verdict::Refused { .. }) => return Renewal::Ended,
            Err(_) => {
                let left = expires.saturating_sub(now_ms() / 1000);
                if left == 0 {
                    return Renewal::Ended;
                }
                tokio::time::sleep(RENEWAL_RETRY.min(Duration::from_secs(left))).await;
            }
        }
    }
}
