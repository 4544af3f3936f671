//! A relay between the operator and the emulator that withholds the reply to one ECS call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Sits between the operator and the emulator and passes every byte through, except that it
/// swallows ECS's reply to the first request for one action (CopyImage, ImportImage,
/// ExportImage …): ECS has started the work but the operator never learns its id, the window in
/// which a crash could lead to doing it twice.
pub struct ReplySwallower {
    pub endpoint: String,
    pub swallowed: Arc<Notify>,
}

impl ReplySwallower {
    /// Relays to `upstream` (`http://HOST:PORT`), withholding the first reply to `action`.
    pub async fn start(upstream: &str, action: &str) -> ReplySwallower {
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
        // The operator signs with ACS3 (V3), which names the action in this header only; the
        // action's name alone also occurs in other calls (CancelCopyImage, DescribeTasks'
        // TaskAction), the header line does not.
        let header: Arc<[u8]> = format!("x-acs-action: {action}\r\n")
            .to_ascii_lowercase()
            .into_bytes()
            .into();
        // Runs until the test's runtime ends.
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    header.clone(),
                    armed.clone(),
                    notify.clone(),
                ));
            }
        });
        ReplySwallower {
            endpoint: format!("http://{address}"),
            swallowed,
        }
    }
}

/// One connection. The ECS client sends each request in one piece on loopback; the search also
/// looks across two reads so a request split inside the header is still seen.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    header: Arc<[u8]>,
    armed: Arc<AtomicBool>,
    swallowed: Arc<Notify>,
) {
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
                carry.extend(buffer[..n].iter().map(u8::to_ascii_lowercase));
                if carry.windows(header.len()).any(|w| *w == *header)
                    && armed.swap(false, Ordering::SeqCst)
                {
                    holding.store(true, Ordering::SeqCst);
                }
                carry.drain(..carry.len().saturating_sub(header.len()));
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
