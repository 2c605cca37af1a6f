//! End-to-end tests: the real `clawcut-worker` binary against real SQLite
//! files (and the throwaway PostgreSQL), with fake providers on 127.0.0.1.

mod backup;
mod cancel;
mod chaos;
mod cli;
mod crash;
mod hardening;
mod health;
mod http;
mod objstore;
mod ops;
mod panel;
mod reconcile;
mod replicas;
mod scheduler;
mod secrets;
mod storage;
mod submit;
mod support;
mod systemd;
mod webhook;
