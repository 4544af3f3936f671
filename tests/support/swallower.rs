//! A relay between the operator and the emulator that withholds one CopyImage reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Sits between the operator and the emulator and passes every byte through, except that it
/// swallows ECS's reply to the first request naming CopyImage: ECS has made the copy but the
/// operator never learns its id, the window in which a crash could lead to a second copy.
pub struct CopyImageReplySwallower {
    pub endpoint: String,
    pub swallowed: Arc<Notify>,
}

impl CopyImageReplySwallower {
    pub async fn start(upstream: &str) -> CopyImageReplySwallower {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let swallowed = Arc::new(Notify::new());
        let armed = Arc::new(AtomicBool::new(true));
        let notify = swallowed.clone();
        // Runs until the test's runtime ends.
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed.clone(), notify.clone()));
            }
        });
        CopyImageReplySwallower {
            endpoint: format!("http://{address}"),
            swallowed,
        }
    }
}

/// One connection. The ECS client sends each request in one piece on loopback; the search also
/// looks across two reads so a request split at the action name is still seen.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    swallowed: Arc<Notify>,
) {
    const ACTION: &[u8] = b"CopyImage";
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let holding = Arc::new(AtomicBool::new(false));
    let requests = {
        let holding = holding.clone();
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut carry: Vec<u8> = Vec::new();
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                carry.extend_from_slice(&buffer[..n]);
                if carry.windows(ACTION.len()).any(|w| w == ACTION)
                    && armed.swap(false, Ordering::SeqCst)
                {
                    holding.store(true, Ordering::SeqCst);
                }
                carry.drain(..carry.len().saturating_sub(ACTION.len()));
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    };
    let replies = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if holding.load(Ordering::SeqCst) {
                swallowed.notify_one();
            } else if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(requests, replies);
}
