//! The control socket: request parsing, the verbs on real functions, and
//! a whole session over a Unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::ena::{EnaSettings, function_config_with_control, switch::Switch};
use crate::function::Function;
use crate::pci::PciId;

#[test]
fn parses_good_requests() {
    let cases: &[(&str, Request)] = &[
        (r#"{"verb":"status"}"#, Request::Status {}),
        (
            r#"{"verb":"link","function":1,"state":"down"}"#,
            Request::Link {
                function: FunctionRef::Index(1),
                state: LinkState::Down,
            },
        ),
        (
            r#" {"state":"up","function":"2","verb":"link"} "#,
            Request::Link {
                function: FunctionRef::Index(2),
                state: LinkState::Up,
            },
        ),
        (
            r#"{"verb":"fatal-error","function":"/run/ena0.sock"}"#,
            Request::FatalError {
                function: FunctionRef::Socket("/run/ena0.sock".into()),
            },
        ),
        (
            r#"{"verb":"keep-alive","function":0,"action":"resume"}"#,
            Request::KeepAlive {
                function: FunctionRef::Index(0),
                action: KeepAliveAction::Resume,
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(&Request::parse(line).unwrap(), expected, "{line}");
        // What the client sends parses back to the same request.
        let sent = serde_json::to_string(expected).unwrap();
        assert_eq!(&Request::parse(&sent).unwrap(), expected, "{sent}");
    }
}

#[test]
fn refuses_bad_requests_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "empty request"),
        ("   ", "empty request"),
        ("status", "malformed request"),
        ("{", "EOF"),
        ("[]", "malformed request"),
        (r#"{"function":0}"#, "missing field `verb`"),
        (r#"{"verb":"reboot"}"#, "unknown variant `reboot`"),
        (
            r#"{"verb":"status","function":0}"#,
            "unknown field `function`",
        ),
        (r#"{"verb":"link","function":0}"#, "missing field `state`"),
        (
            r#"{"verb":"link","state":"up"}"#,
            "missing field `function`",
        ),
        (
            r#"{"verb":"link","function":0,"state":"sideways"}"#,
            "unknown variant `sideways`",
        ),
        (
            r#"{"verb":"link","function":-1,"state":"up"}"#,
            "function index -1 is negative",
        ),
        (
            r#"{"verb":"link","function":1.5,"state":"up"}"#,
            "expected a function index",
        ),
        (
            r#"{"verb":"link","function":"","state":"up"}"#,
            "its socket path, not ''",
        ),
        (
            r#"{"verb":"link","function":"99999999999999999999999","state":"up"}"#,
            "out of range",
        ),
        (
            r#"{"verb":"keep-alive","function":0,"action":"stop"}"#,
            "unknown variant `stop`",
        ),
        (
            r#"{"verb":"fatal-error","function":0,"extra":true}"#,
            "unknown field `extra`",
        ),
    ];
    for (line, expected) in cases {
        let err = Request::parse(line).unwrap_err();
        assert!(err.contains(expected), "{line}: {err}");
    }
}

/// A card like `--function ena:... --function efa:... --function ena:...`.
struct TestCard {
    card: Card,
}

fn test_card() -> TestCard {
    let switch = Arc::new(Switch::new());
    let mut controlled = Vec::new();
    for (i, kind) in [FunctionKind::Ena, FunctionKind::Efa, FunctionKind::Ena]
        .into_iter()
        .enumerate()
    {
        let socket = PathBuf::from(format!("/run/braid/{kind}{i}.sock"));
        let (config, ena) = match kind {
            FunctionKind::Ena => {
                let settings = EnaSettings::derived_from(socket.to_str().unwrap().as_bytes());
                let (config, control) = function_config_with_control(
                    PciId::new(0x1d0f, 0xec20),
                    settings,
                    Arc::clone(&switch),
                );
                (config, Some(control))
            }
            FunctionKind::Efa => (kind.config(kind.default_id()), None),
        };
        let function = Arc::new(Function::new(config).unwrap());
        controlled.push(ControlledFunction {
            socket,
            kind,
            ena,
            function,
        });
    }
    TestCard {
        card: Card::new(controlled),
    }
}

fn ena_of(r: &Response, i: usize) -> &EnaFunctionStatus {
    r.functions[i].ena.as_ref().expect("an ENA function")
}

#[test]
fn verbs_act_on_the_named_function() {
    let t = test_card();
    let status = t.card.handle_line(r#"{"verb":"status"}"#);
    assert!(status.ok, "{status:?}");
    assert_eq!(status.functions.len(), 3);
    assert_eq!(
        status
            .functions
            .iter()
            .map(|f| (f.index, f.kind.as_str(), f.ena.is_some()))
            .collect::<Vec<_>>(),
        [(0, "ena", true), (1, "efa", false), (2, "ena", true)]
    );
    let e0 = ena_of(&status, 0);
    assert_eq!(
        (e0.link.as_str(), e0.keep_alive.as_str(), e0.state.as_str()),
        ("up", "idle", "ready")
    );
    assert_eq!(e0.counters.tx_pkts, 0);
    assert_ne!(e0.mac, ena_of(&status, 2).mac);

    // By socket path; the response carries that function after the change.
    let r = t
        .card
        .handle_line(r#"{"verb":"link","function":"/run/braid/ena2.sock","state":"down"}"#);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.functions.len(), 1);
    assert_eq!(r.functions[0].index, 2);
    assert_eq!(ena_of(&r, 0).link, "down");
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("when the driver arms")
    );
    let r = t.card.handle(&Request::Link {
        function: FunctionRef::Index(2),
        state: LinkState::Down,
    });
    assert_eq!(r.message.as_deref(), Some("link already down"));
    // Function 0 is untouched.
    let status = t.card.handle(&Request::Status {});
    assert_eq!(ena_of(&status, 0).link, "up");
    assert_eq!(ena_of(&status, 2).link, "down");

    let r = t
        .card
        .handle_line(r#"{"verb":"keep-alive","function":0,"action":"pause"}"#);
    assert_eq!(ena_of(&r, 0).keep_alive, "paused");
    let r = t.card.handle_line(r#"{"verb":"fatal-error","function":0}"#);
    assert!(r.ok, "{r:?}");
    assert_eq!(ena_of(&r, 0).state, "fatal");
    assert_eq!(ena_of(&r, 0).keep_alive, "stopped");
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("no FATAL_ERROR event")
    );
}

#[test]
fn verbs_refuse_missing_and_non_ena_functions() {
    let t = test_card();
    let cases: &[(&str, &str)] = &[
        (
            r#"{"verb":"link","function":3,"state":"up"}"#,
            "no function 3: the card has 3 (0..=2)",
        ),
        (
            r#"{"verb":"fatal-error","function":"/run/braid/nope.sock"}"#,
            "no function has the socket /run/braid/nope.sock",
        ),
        (
            r#"{"verb":"keep-alive","function":1,"action":"pause"}"#,
            "function 1 (/run/braid/efa1.sock) is efa",
        ),
        (r#"{"verb":"link"#, "malformed request"),
    ];
    for (line, expected) in cases {
        let r = t.card.handle_line(line);
        assert!(!r.ok, "{line}");
        let err = r.error.as_deref().unwrap();
        assert!(err.contains(expected), "{line}: {err}");
        assert!(r.functions.is_empty());
    }
}

#[test]
fn responses_round_trip_and_tables_align() {
    let t = test_card();
    let status = t.card.handle(&Request::Status {});
    let line = status.to_line();
    assert!(!line.contains('\n'));
    let back: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(back, status);
    let efa = &back.functions[1];
    assert!(
        efa.kind == "efa" && efa.ena.is_none(),
        "EFA has no ENA part: {line}"
    );
    assert!(
        !line.contains(r#""kind":"efa","traps":{"registers":0,"other_bars":0,"config":0},"ena""#)
    );

    let table = format_table(&status.functions);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("INDEX  KIND  SOCKET"));
    // Every column starts at the same place on every row.
    let link_col = lines[0].find("LINK").unwrap();
    assert_eq!(&lines[1][link_col..link_col + 2], "up");
    assert_eq!(&lines[2][link_col..link_col + 1], "-");
    let rx_drops_end = lines[0].len();
    assert_eq!(lines[1].len(), rx_drops_end);
    assert!(lines[1].ends_with(" 0"));
}

/// A fresh socket path under the system temporary directory.
fn temp_socket(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "braid-control-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn socket_session_end_to_end() {
    let t = test_card();
    let path = temp_socket("control.sock");
    let server = ControlServer::bind(&path, Arc::new(t.card.clone())).unwrap();
    assert_eq!(server.path(), path);
    std::thread::spawn(move || server.serve());

    // The client function: one request per connection.
    let r = request(&path, &Request::Status {}).unwrap();
    assert!(r.ok);
    assert_eq!(r.functions.len(), 3);
    let r = request(
        &path,
        &Request::Link {
            function: FunctionRef::Index(0),
            state: LinkState::Down,
        },
    )
    .unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(ena_of(&r, 0).link, "down");
    let r = request(
        &path,
        &Request::KeepAlive {
            function: FunctionRef::Index(1),
            action: KeepAliveAction::Pause,
        },
    )
    .unwrap();
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("is efa"));

    // Several lines on one connection, bad ones among them: one answer
    // each, in order, and the connection survives.
    let stream = UnixStream::connect(&path).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ask = |line: &[u8]| {
        (&stream).write_all(line).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str::<Response>(&answer).unwrap()
    };
    assert!(ask(b"garbage\n").error.unwrap().contains("malformed"));
    assert!(ask(b"\xff\xfe\n").error.unwrap().contains("not UTF-8"));
    assert!(ask(b"\n").error.unwrap().contains("empty request"));
    let r = ask(b"{\"verb\":\"status\"}\r\n");
    assert!(r.ok);
    assert_eq!(
        ena_of(&r, 0).link,
        "down",
        "state is the card's, not the connection's"
    );
    // An over-long line is refused whole; the next request is served.
    let mut long = vec![b' '; 3 * MAX_REQUEST_LINE + 10];
    long.push(b'\n');
    let r = ask(&long);
    assert!(r.error.unwrap().contains("longer than"));
    assert!(ask(b"{\"verb\":\"status\"}\n").ok);

    // A second card cannot take a live control socket.
    let err = ControlServer::bind(&path, Arc::new(Card::default())).unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    // A client on a path nobody serves gets a clear error.
    let missing = temp_socket("missing.sock");
    let err = request(&missing, &Request::Status {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot connect to the control socket"),
        "{err}"
    );
    for p in [&path, &missing] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn stale_socket_is_replaced_and_other_files_refused() {
    let path = temp_socket("stale.sock");
    // A socket nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let server = ControlServer::bind(&path, Arc::new(Card::default())).unwrap();
    std::thread::spawn(move || server.serve());
    let r = request(&path, &Request::Status {}).unwrap();
    assert!(r.ok && r.functions.is_empty());

    let file = temp_socket("plain-file");
    std::fs::write(&file, b"not a socket").unwrap();
    let err = ControlServer::bind(&file, Arc::new(Card::default())).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
    for p in [&path, &file] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn client_reports_a_silent_or_garbled_card() {
    for (answer, expected) in [
        (&b""[..], "closed the connection without answering"),
        (b"hello\n", "unreadable response"),
    ] {
        let path = temp_socket("fake.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(answer).unwrap();
        });
        let err = request(&path, &Request::Status {}).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        fake.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
