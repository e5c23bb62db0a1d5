//! End-to-end tests: the real server binary, real clients over TCP, a real SQLite file.

mod abuse;
mod bad_input;
mod bounds;
mod changes;
mod compat;
mod compression;
mod directs;
mod edge;
mod exposure;
mod failover;
mod faults;
mod history;
mod hooks;
mod metrics;
mod moderation;
mod nginx;
mod nodes;
mod presence;
mod proxy;
mod resume;
mod security;
mod settings;
mod sse;
mod support;
mod tls;
mod webhooks;
