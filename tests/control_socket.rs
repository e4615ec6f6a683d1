//! The control socket server over real Unix sockets: file modes, framing limits,
//! concurrent clients, ownership of the socket path, and sd_notify.

mod control_common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::{Duration, Instant};

use control_common::{RawClient, Server};
use iiptran::control::{BindError, Body, ErrorKind, Response, ServerConfig};
use iiptran::notify::{Notifier, State};
use iiptran_testkit::WorkDir;

fn error_kind(response: &Response) -> ErrorKind {
    match &response.body {
        Body::Error(error) => error.kind,
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let tmp = WorkDir::temp("control-modes").unwrap();
    let dir = tmp.path.join("run").join("iiptran");
    let path = dir.join("control.sock");
    let server = Server::start(ServerConfig::new(&path)).unwrap();

    let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(dir_mode, 0o700, "directory mode {dir_mode:o}");
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

    let response = RawClient::connect(&path).ask(r#"{"verb":"status"}"#);
    assert_eq!(response.version, 1);
    assert_eq!(
        response.body,
        Body::Status(server.handler.fixture.status.clone())
    );

    drop(server);
    assert!(!path.exists(), "socket file left behind after shutdown");
}

#[test]
fn bad_requests_get_error_responses() {
    let tmp = WorkDir::temp("control-bad").unwrap();
    let path = tmp.path.join("control.sock");
    let _server = Server::start(ServerConfig::new(&path)).unwrap();
    let mut client = RawClient::connect(&path);

    assert_eq!(error_kind(&client.ask("{not json")), ErrorKind::BadRequest);
    assert_eq!(error_kind(&client.ask("[1,2]")), ErrorKind::BadRequest);
    assert_eq!(
        error_kind(&client.ask(r#"{"verb":7}"#)),
        ErrorKind::BadRequest
    );
    assert_eq!(
        error_kind(&client.ask(r#"{"verb":"explode"}"#)),
        ErrorKind::UnknownVerb
    );
    assert_eq!(
        error_kind(&client.ask(r#"{"verb":"initiate"}"#)),
        ErrorKind::BadRequest,
        "missing argument"
    );
    assert_eq!(
        error_kind(&client.ask(r#"{"verb":"status","surprise":1}"#)),
        ErrorKind::BadRequest,
        "unknown field"
    );
    assert_eq!(
        error_kind(&client.ask(r#"{"verb":"initiate","name":"nobody"}"#)),
        ErrorKind::NotFound,
        "handler errors pass through"
    );
    // The connection survives all of that.
    let response = client.ask(r#"{"verb":"rekey","name":"n2","ike":true}"#);
    assert!(matches!(response.body, Body::Done(_)), "{response:?}");
}

#[test]
fn oversized_line_is_refused_and_closed() {
    let tmp = WorkDir::temp("control-long").unwrap();
    let path = tmp.path.join("control.sock");
    let mut config = ServerConfig::new(&path);
    config.max_line = 1024;
    let _server = Server::start(config).unwrap();

    // Exactly the limit is fine.
    let mut client = RawClient::connect(&path);
    let padded = format!(
        r#"{{"verb":"initiate","name":"n2"{}}}"#,
        " ".repeat(1024 - 31)
    );
    assert_eq!(padded.len(), 1024);
    assert!(matches!(client.ask(&padded).body, Body::Done(_)));

    // One byte more, newline never sent: refused without waiting for the rest.
    let mut client = RawClient::connect(&path);
    client.send(&[b' '; 1025]);
    let response = client.response().expect("an error response");
    assert_eq!(error_kind(&response), ErrorKind::TooLong);
    assert!(client.response().is_none(), "connection must be closed");
}

#[test]
fn slow_client_times_out_while_others_are_served() {
    let tmp = WorkDir::temp("control-slow").unwrap();
    let path = tmp.path.join("control.sock");
    let mut config = ServerConfig::new(&path);
    config.io_timeout = Duration::from_millis(1500);
    let _server = Server::start(config).unwrap();

    let started = Instant::now();
    let mut slow = RawClient::connect(&path);
    slow.send(br#"{"verb":"sta"#);
    let mut idle = RawClient::connect(&path);

    // Served while the slow and idle clients hold their connections.
    for _ in 0..5 {
        let response = RawClient::connect(&path).ask(r#"{"verb":"list-sas"}"#);
        assert!(matches!(response.body, Body::Sas(_)), "{response:?}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "other clients were not served concurrently"
    );

    for client in [&mut slow, &mut idle] {
        let response = client.response().expect("a timeout response");
        assert_eq!(error_kind(&response), ErrorKind::Timeout);
        assert!(client.response().is_none(), "connection must be closed");
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn many_clients_at_once() {
    let tmp = WorkDir::temp("control-many").unwrap();
    let path = tmp.path.join("control.sock");
    let _server = Server::start(ServerConfig::new(&path)).unwrap();
    // All connected before any asks, so the server holds them all at once.
    let mut clients: Vec<RawClient> = (0..40).map(|_| RawClient::connect(&path)).collect();
    for client in &mut clients {
        client.send(b"{\"verb\":\"list-neighbors\"}\n");
    }
    for client in &mut clients {
        let response = client.response().expect("a response");
        assert!(matches!(response.body, Body::Neighbors(ref n) if n.len() == 2));
    }
}

#[test]
fn clients_beyond_the_limit_are_told_busy() {
    let tmp = WorkDir::temp("control-busy").unwrap();
    let path = tmp.path.join("control.sock");
    let mut config = ServerConfig::new(&path);
    config.max_clients = 2;
    let _server = Server::start(config).unwrap();
    let mut held: Vec<RawClient> = (0..2).map(|_| RawClient::connect(&path)).collect();
    // Answered, so both connections are being served before the third arrives.
    for client in &mut held {
        assert!(matches!(
            client.ask(r#"{"verb":"status"}"#).body,
            Body::Status(_)
        ));
    }
    let mut third = RawClient::connect(&path);
    let response = third.response().expect("a busy response");
    assert_eq!(error_kind(&response), ErrorKind::Busy);
    assert!(third.response().is_none(), "connection must be closed");

    // A slot frees when a client leaves.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = RawClient::connect(&path);
        match client.ask(r#"{"verb":"status"}"#).body {
            Body::Status(_) => break,
            Body::Error(e) if e.kind == ErrorKind::Busy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("expected status, got {other:?}"),
        }
    }
}

#[test]
fn second_server_refuses_and_stale_socket_is_replaced() {
    let tmp = WorkDir::temp("control-owner").unwrap();
    let path = tmp.path.join("control.sock");
    let first = Server::start(ServerConfig::new(&path)).unwrap();
    match Server::start(ServerConfig::new(&path)) {
        Err(BindError::InUse(p)) => assert_eq!(p, path),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("a second server bound the path of a running one"),
    }
    // The refused server left the first one's socket alone.
    let response = RawClient::connect(&path).ask(r#"{"verb":"status"}"#);
    assert!(matches!(response.body, Body::Status(_)));
    drop(first);

    // A socket file nobody listens on, as a crashed daemon leaves it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let second = Server::start(ServerConfig::new(&path)).unwrap();
    let response = RawClient::connect(&path).ask(r#"{"verb":"status"}"#);
    assert_eq!(
        response.body,
        Body::Status(second.handler.fixture.status.clone())
    );
    drop(second);

    // Something else listening on the path without the lock is not replaced either.
    let foreign = UnixListener::bind(&path).unwrap();
    assert!(matches!(
        Server::start(ServerConfig::new(&path)),
        Err(BindError::InUse(_))
    ));
    drop(foreign);
    fs::remove_file(&path).unwrap();

    // Nor is a file that is not a socket.
    fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        Server::start(ServerConfig::new(&path)),
        Err(BindError::NotASocket(_))
    ));
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn sd_notify_reaches_path_and_abstract_sockets() {
    let tmp = WorkDir::temp("control-notify").unwrap();
    let path = tmp.path.join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notifier = Notifier::new(path.as_os_str()).unwrap();
    notifier
        .notify(&[State::Ready, State::Status("serving\n2 neighbors")])
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving 2 neighbors\n");

    let name = format!("iiptran-notify-test-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    abstract_listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notifier = Notifier::new(format!("@{name}").as_ref()).unwrap();
    notifier
        .notify(&[State::Stopping, State::Watchdog])
        .unwrap();
    let n = abstract_listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\nWATCHDOG=1\n");

    assert!(Notifier::new("relative/path".as_ref()).is_err());
}
