//! The epoll engine: a tokio current-thread runtime, one task per client and
//! upstream pair, a read/write loop with its own buffer per direction (the
//! shape of tether's tunnel, without its WebSocket frame tracking).

use std::io;
use std::net::TcpListener as StdListener;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Upstreams, BUF_SIZE};

/// Runs the relay on `listener` until the process ends.
pub fn run(listener: StdListener, mut upstreams: Upstreams) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        loop {
            let (client, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let upstream = upstreams.pick();
            tokio::spawn(async move {
                if let Err(e) = relay_pair(client, upstream).await {
                    eprintln!("relay to {upstream}: {e}");
                }
            });
        }
    })
}

async fn relay_pair(mut client: TcpStream, upstream: std::net::SocketAddr) -> io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    // The first error (a reset) ends both directions; ends of stream don't.
    tokio::try_join!(pump(&mut cr, &mut sw), pump(&mut sr, &mut cw)).map(|_| ())
}

/// Copies `from` to `to` until end of stream, then shuts `to` down for writing.
async fn pump<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
