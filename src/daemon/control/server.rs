//! The daemon's end of the control socket: binds it (refusing to start beside another daemon,
//! clearing a stale socket left by a crash), checks each peer's credentials, reads one request
//! and streams the daemon's answer back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use super::{Call, MAX_REQUEST, Replies, Reply, Request};

/// Clients served at once; more wait for a place.
const MAX_CLIENTS: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another certkeeper daemon answers on {0}: stop it first (systemctl stop certkeeper), or give this one its own daemon.control_socket"
    )]
    AlreadyRunning(PathBuf),
    #[error(
        "cannot create the control socket {path}: {source}; check that its directory is writable by this user (daemon.control_socket)"
    )]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bound control socket; its file is removed when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket at `path`, mode 0660.
pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    let failed = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    if path.exists() {
        // A socket that still answers belongs to a live daemon; one that does not was left
        // behind by a crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(failed)?;
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(failed)?;
    Ok(ControlSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Accepts clients until `shutdown` resolves, handing each request to the daemon's loop.
pub async fn serve(
    socket: ControlSocket,
    calls: mpsc::Sender<Call>,
    shutdown: impl Future<Output = ()>,
) {
    let places = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            serve_client(stream, calls).await;
            drop(place);
        });
    }
}

async fn serve_client(mut stream: UnixStream, calls: mpsc::Sender<Call>) {
    if let Err(why) = authorize(&stream) {
        tracing::warn!("control socket: {why}");
        let _ = write_reply(&mut stream, &Reply::failed(77, why)).await;
        return;
    }
    let (reader, mut writer) = stream.split();
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(reader)).await {
        Ok(Ok(request)) => request,
        Ok(Err(why)) => {
            let _ = write_reply(&mut writer, &Reply::failed(64, why)).await;
            return;
        }
        Err(_) => return,
    };
    tracing::debug!(?request, "control request");
    let (replies, mut answers) = Replies::channel();
    if calls.send(Call { request, replies }).await.is_err() {
        let _ = write_reply(
            &mut writer,
            &Reply::failed(1, "the daemon is stopping; try again once it runs"),
        )
        .await;
        return;
    }
    while let Some(reply) = answers.recv().await {
        let done = matches!(reply, Reply::Done { .. });
        if write_reply(&mut writer, &reply).await.is_err() || done {
            return;
        }
    }
}

/// Why a client of the control socket is refused.
#[derive(Debug, thiserror::Error)]
enum Unauthorized {
    #[error("cannot read the client's credentials: {0}")]
    Credentials(#[source] std::io::Error),
    #[error(
        "refused: {client} may not control certkeeper (only root, {daemon} or {group}); run the \
         command as one of them, or add the user to the group (usermod -aG GROUP USER)"
    )]
    NotAllowed {
        client: String,
        daemon: String,
        group: String,
    },
}

/// Root, the daemon's own user, or a member of its group (primary or supplementary) may use
/// the socket; anyone else is refused.
fn authorize(stream: &UnixStream) -> Result<(), Unauthorized> {
    let peer = stream.peer_cred().map_err(Unauthorized::Credentials)?;
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let peer_user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid()))
        .ok()
        .flatten();
    if peer.uid() == 0
        || peer.uid() == uid.as_raw()
        || peer.gid() == gid.as_raw()
        || peer_user.as_ref().is_some_and(|user| member_of(user, gid))
    {
        return Ok(());
    }
    let name = |uid| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name)
    };
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or_else(
            || format!("the group of gid {gid}"),
            |g| format!("members of group {}", g.name),
        );
    Err(Unauthorized::NotAllowed {
        client: name(peer.uid()),
        daemon: name(uid.as_raw()),
        group,
    })
}

/// Whether `user` belongs to `group` in the group database, as a login would see it.
fn member_of(user: &nix::unistd::User, group: nix::unistd::Gid) -> bool {
    let Ok(name) = std::ffi::CString::new(user.name.as_str()) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&group))
}

async fn read_request(
    reader: impl tokio::io::AsyncRead + Unpin,
) -> Result<Request, super::RequestError> {
    let mut line = String::new();
    BufReader::new(reader.take(MAX_REQUEST as u64))
        .read_line(&mut line)
        .await
        .map_err(super::RequestError::Read)?;
    super::parse_request(&line)
}

async fn write_reply(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    reply: &Reply,
) -> std::io::Result<()> {
    super::write_line(writer, reply).await
}
