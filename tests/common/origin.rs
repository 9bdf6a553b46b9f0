//! A real HTTP origin for read-through tests: a std-only HTTP/1.1 server on
//! a free loopback port, one thread per connection, that answers
//! `GET /{group}/{key}` by what the key's name asks for and counts the
//! requests per path:
//!
//! | key starts with | answer |
//! |---|---|
//! | `missing` | 404 |
//! | `fail` | 500, until [`Origin::heal`] is called for it, then 200 |
//! | `hang` | nothing, ever (the connection stays open) |
//! | `slow` | 200 after 300 ms |
//! | anything else | 200 at once |
//!
//! A 200's body is `origin:{group}/{key}`. Connections are closed after
//! each response (the node asks for that).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    requests: HashMap<String, usize>,
    healed: HashSet<String>,
}

pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Origin {
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Origin { addr, state }
    }

    /// The URL template of a group served by this origin.
    pub fn template(&self) -> String {
        format!("http://{}/{{group}}/{{key}}", self.addr)
    }

    /// Requests seen for `/{group}/{key}`.
    pub fn requests(&self, group: &str, key: &str) -> usize {
        let path = format!("/{group}/{key}");
        self.state
            .lock()
            .unwrap()
            .requests
            .get(&path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen in all.
    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().requests.values().sum()
    }

    /// A `fail...` key answers 200 from now on.
    pub fn heal(&self, group: &str, key: &str) {
        let path = format!("/{group}/{key}");
        self.state.lock().unwrap().healed.insert(path);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Skip the header fields.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let healed = {
        let mut s = state.lock().unwrap();
        *s.requests.entry(path.clone()).or_insert(0) += 1;
        s.healed.contains(&path)
    };
    let key = path.rsplit('/').next().unwrap_or("");
    let mut conn = conn;
    let (status, body) = if key.starts_with("missing") {
        ("404 Not Found", String::new())
    } else if key.starts_with("fail") && !healed {
        ("500 Internal Server Error", "origin exploded".to_string())
    } else if key.starts_with("hang") {
        std::thread::sleep(Duration::from_secs(3600));
        return;
    } else {
        if key.starts_with("slow") {
            std::thread::sleep(Duration::from_millis(300));
        }
        ("200 OK", format!("origin:{}", path.trim_start_matches('/')))
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}
