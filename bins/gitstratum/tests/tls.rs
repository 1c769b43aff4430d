//! Webhooks over HTTPS, against a real TLS receiver (Python's `ssl` module) with certificates made
//! by `openssl`: a receiver whose certificate chains to a trusted CA gets its delivery; one whose
//! CA is not trusted gets none, and the delivery log says why. The server trusts what the operating
//! system trusts; here `SSL_CERT_FILE` names the test CA.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn;
use serde_json::{Value, json};

mod common;

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1 it signed: (ca.pem, leaf.pem, leaf.key).
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let [ca, ca_key, csr, leaf, key, ext] =
        [".ca.pem", ".ca.key", ".csr", ".pem", ".key", ".ext"].map(|suffix| format!("{name}{suffix}"));
    run(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", &format!("/CN={name} test CA"), "-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
    );
    run(dir, &[&["req"][..], &ec, &["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]].concat());
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &leaf,
        ],
    );
    (dir.join(ca), dir.join(leaf), dir.join(key))
}

const RECEIVER: &str = r#"
import http.server, ssl, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        print(self.headers["x-github-event"], body.decode(), flush=True)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// An HTTPS receiver; its stdout carries one line per request ("EVENT BODY").
struct Receiver {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    url: String,
}

impl Receiver {
    fn start(cert: &Path, key: &Path) -> Receiver {
        let mut child = Command::new("python3")
            .args(["-c", RECEIVER])
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = lines.recv_timeout(Duration::from_secs(20)).expect("receiver port");
        Receiver { child, lines, url: format!("https://127.0.0.1:{}/hook", port.trim()) }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(base: &str, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = gitstratum_server::http::client().expect("client");
    let mut request = client.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn https_webhooks_verify_the_receivers_certificate() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().expect("temp dir");
    let (trusted_ca, trusted_cert, trusted_key) = certificates(tmp.path(), "trusted");
    let (_, rogue_cert, rogue_key) = certificates(tmp.path(), "rogue");
    let trusted = Receiver::start(&trusted_cert, &trusted_key);
    let rogue = Receiver::start(&rogue_cert, &rogue_key);

    let data = tmp.path().join("data");
    let ca = trusted_ca.to_str().expect("utf-8");
    let mut server = spawn(&data, &[], &[("SSL_CERT_FILE", ca)]);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    assert_eq!(call(&base, &token, Method::POST, "/api/v1/orgs", Some(json!({"name": "acme"}))).await.0, 201);
    let mut hooks = Vec::new();
    for url in [&trusted.url, &rogue.url] {
        let body = json!({"url": url, "events": ["repository"]});
        let (status, hook) = call(&base, &token, Method::POST, "/api/v1/orgs/acme/hooks", Some(body)).await;
        assert_eq!(status, 201, "{hook}");
        hooks.push(hook["id"].as_i64().expect("id"));
    }
    let body = json!({"name": "app", "owner": "acme"});
    assert_eq!(call(&base, &token, Method::POST, "/api/v1/repos", Some(body)).await.0, 201);

    let line = trusted.lines.recv_timeout(Duration::from_secs(30)).expect("the trusted receiver got the delivery");
    assert!(line.starts_with("repository ") && line.contains(r#""action":"created""#), "{line}");

    let deliveries = format!("/api/v1/orgs/acme/hooks/{}/deliveries", hooks[1]);
    let end = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let (_, log) = call(&base, &token, Method::GET, &deliveries, None).await;
        if log[0]["attempts"].as_i64() >= Some(1) || Instant::now() > end {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(log[0]["state"], "pending", "retried later: {log}");
    let error = log[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate") && error.contains("UnknownIssuer"), "{error}");
    assert!(rogue.lines.try_recv().is_err(), "nothing reached the untrusted receiver");
    assert_eq!(server.terminate().code(), Some(0));
}
