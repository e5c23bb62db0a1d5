//! Test support: Debian's nginx with the project's own site file (deploy/nginx/livechat.conf),
//! its upstreams and port replaced, from a temporary prefix.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::support::PATIENCE;

/// Stops nginx, master and workers together, when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx in front of `nodes` on a free port.
    pub async fn start(nodes: &[SocketAddr]) -> Nginx {
        Nginx::start_site(nodes, true).await
    }

    /// The same with nginx's default response buffering (the site's `proxy_buffering off`
    /// left out): what a proxy set up without livechat in mind does.
    pub async fn start_buffering(nodes: &[SocketAddr]) -> Nginx {
        Nginx::start_site(nodes, false).await
    }

    async fn start_site(nodes: &[SocketAddr], as_shipped: bool) -> Nginx {
        let site_file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/livechat.conf");
        let site = std::fs::read_to_string(&site_file).expect("deploy/nginx/livechat.conf");
        let addr = free_address();
        let dir = tempfile::tempdir().expect("temp dir");
        let upstreams: String = nodes
            .iter()
            .map(|node| format!("    server {node};\n"))
            .collect();
        let site: String = site
            .lines()
            .filter(|line| !line.trim_start().starts_with("server 127.0.0.1:"))
            .filter(|line| as_shipped || line.trim() != "proxy_buffering off;")
            .map(|line| match line.trim() {
                "upstream livechat {" => format!("{line}\n{upstreams}"),
                "listen 80;" => format!("    listen {addr};"),
                access if access.starts_with("access_log /var/log/nginx/") => {
                    let format = access.rsplit(' ').next().unwrap_or_default();
                    format!(
                        "    access_log {}/access.log {format}",
                        dir.path().display()
                    )
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let prefix = dir.path().display().to_string();
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        // As root, nginx's workers would run as `nobody`, which cannot use the temporary prefix.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let main = format!(
            "{user}\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n\
               proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n\
               uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n\
               include {prefix}/site.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &prefix,
                "-c",
                &format!("{prefix}/nginx.conf"),
                "-g",
                "daemon off;",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that its workers go with it (see Drop).
            .process_group(0)
            .spawn()
            .expect("nginx must be installed (./scripts/test.sh installs it)");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Nginx { child, addr, dir }
    }
}

impl Nginx {
    /// What nginx wrote to the site's access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill() with a process group id this test started; no memory is involved.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

fn free_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("address")
}
