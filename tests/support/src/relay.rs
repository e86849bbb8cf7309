//! A TCP relay on a given port that sends each connection to the address
//! a function chooses when it arrives: a load balancer in front of several
//! instances, steered by the test (for example to the instance that did
//! not order an ACME certificate).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

/// How the relay chooses where a connection goes (`None`: it is closed).
pub type Choose = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send>> + Send + Sync>;

/// A running relay; it stops when dropped.
pub struct Relay {
    /// Where each connection went, in order of arrival.
    pub relayed: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1:`port` and relays each connection, both ways,
    /// to the address `choose` gives for it.
    pub async fn start(port: u16, choose: Choose) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("relay port");
        let relayed = Arc::new(Mutex::new(Vec::new()));
        let record = relayed.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (choose, record) = (choose.clone(), record.clone());
                tokio::spawn(async move {
                    let Some(target) = choose().await else {
                        return;
                    };
                    record.lock().expect("relay record").push(target);
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { relayed, task }
    }

    /// The addresses connections went to so far.
    pub fn targets(&self) -> Vec<SocketAddr> {
        self.relayed.lock().expect("relay record").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
