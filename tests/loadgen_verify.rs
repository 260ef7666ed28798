//! loadgen against the real `progressd` binary (embedded SQLite, loopback port): a short
//! open-loop run with adversarial traffic (retries, reordering, offline batches, device
//! switches) and `--verify` must find no lost, stale or phantom key — invariants I1
//! and I6 end to end — and the server must then stop cleanly on SIGTERM (I2).
//! No assertion here is about speed.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use loadgen::cli::{Cli, Command as LoadgenCommand};

/// The server process; killed outright if a test fails before its clean stop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(db: &std::path::Path) -> Server {
        // Ask the kernel for a free loopback port, then hand it to the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(env!("CARGO_BIN_EXE_progressd"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--flush-interval",
                "200ms",
            ])
            .arg("--store")
            .arg(format!("sqlite://{}", db.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("progressd starts");
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "progressd did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// SIGTERM by PID, then wait (bounded) for a clean exit.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered to {pid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait on progressd") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "progressd did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn loadgen_verify_finds_no_lost_or_stale_keys_on_the_real_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("progress.db"));
    let target = format!("http://{}", server.addr);
    let args = [
        "loadgen",
        "run",
        "--target",
        &target,
        "--viewers",
        "2000",
        "--interval",
        "1s",
        "--duration",
        "3s",
        "--connections",
        "16",
        "--verify",
        "--quiet",
        "--settle",
        "20s",
        "--dup-rate",
        "0.05",
        "--reorder-rate",
        "0.05",
        "--offline-rate",
        "0.02",
        "--offline-beats",
        "2",
        "--device-switch-rate",
        "0.02",
        "--churn-rate",
        "0.05",
        "--seed",
        "4",
    ];
    let cfg = match Cli::try_parse_from(args).expect("valid flags").command {
        LoadgenCommand::Run(r) => r.into_config().expect("valid config"),
        _ => unreachable!("a run command was parsed"),
    };
    let report = loadgen::run_blocking(cfg).expect("the run completes");
    let v = report.verify.as_ref().expect("verification ran");
    assert!(report.passed(), "{}", report.text());
    assert_eq!((v.lost, v.stale, v.phantom, v.stale_reads), (0, 0, 0, 0));
    assert!(
        v.keys >= 2000,
        "every viewer's key was checked: {}",
        report.text()
    );
    assert!(
        report.counters.ok > 0 && report.counters.stale > 0,
        "{}",
        report.text()
    );
    assert_eq!(report.server.flushed, Some(true), "{}", report.text());
    assert!(
        report.server.rows_written.is_some_and(|r| r > 0.0),
        "{}",
        report.text()
    );

    let (status, log) = server.stop();
    assert!(
        status.success(),
        "progressd exited {status} after SIGTERM:\n{log}"
    );
}
