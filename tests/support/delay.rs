//! A TCP proxy on loopback that holds every chunk for a fixed time in each
//! direction: a store across a network (a Redis 1 ms away, say) for tests
//! and benchmarks (`loadgen delay`). Chunks keep their order and do not
//! wait for one another, so a pipeline of commands keeps flowing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A proxy to `target` on 127.0.0.1 (port `port`, 0 for any), each way
/// `delay` long; it runs until the runtime stops.
pub async fn start(port: u16, target: SocketAddr, delay: Duration) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let ((client_in, client_out), (server_in, server_out)) = (client.into_split(), server.into_split());
                tokio::join!(pipe(client_in, server_out, delay), pipe(server_in, client_out, delay));
            });
        }
    });
    Ok(addr)
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        loop {
            let mut chunk = vec![0; 16 * 1024];
            match from.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send((Instant::now() + delay, chunk)).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
