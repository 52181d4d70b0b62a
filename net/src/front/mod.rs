//! The front end: one small tokio runtime that owns every listener of the appliance, the
//! HTTP port where every AWS-compatible API is served ([`http`]) and the native QUIC
//! endpoint ([`crate::quic::server`]), and hands work to the engine's shard cores.
//!
//! The front end owns its runtime (the listeners borrow it), so that it starts them all,
//! and stops them all, in one place: [`FrontEnd::shutdown`] stops accepting, tells QUIC
//! clients, gives in-flight requests a moment and stops the threads.

pub mod http;

use std::net::SocketAddr;
use std::time::Duration;

use millrace_core::Engine;

use crate::aws::Router;
use crate::quic::server::{QuicConfig, QuicServer};

pub use self::http::{Auth, HttpConfig};

/// The running front end.
pub struct FrontEnd {
    runtime: tokio::runtime::Runtime,
    http: Vec<http::Listener>,
    quic: Vec<QuicServer>,
}

impl FrontEnd {
    /// Starts the runtime (`threads` workers) with no listener yet.
    pub fn start(threads: usize) -> std::io::Result<FrontEnd> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("millrace-front")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(FrontEnd { runtime, http: Vec::new(), quic: Vec::new() })
    }

    /// The runtime, for tasks that belong with the listeners.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Serves the router's services over HTTP/1.1 and HTTP/2 on `config.listen`; returns the
    /// address it listens on (the port the kernel chose, for port 0).
    pub fn serve_http(&mut self, router: Router, config: HttpConfig) -> std::io::Result<SocketAddr> {
        let listener = http::Listener::start(&self.runtime, router, config)?;
        let address = listener.local_addr();
        self.http.push(listener);
        Ok(address)
    }

    /// Serves the native protocol over QUIC.
    pub fn serve_quic(&mut self, engine: Engine, config: QuicConfig) -> std::io::Result<SocketAddr> {
        let _entered = self.runtime.enter();
        let server = QuicServer::start(engine, config)?;
        let address = server.local_addr()?;
        self.quic.push(server);
        Ok(address)
    }

    /// Stops accepting, closes QUIC connections (telling the clients, so that they reconnect
    /// at once), gives in-flight requests a moment to finish, and stops the threads.
    pub fn shutdown(self) {
        for server in &self.quic {
            server.shutdown();
        }
        for listener in &self.http {
            listener.stop();
        }
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}
