//! The README's quickstart, run verbatim: its shell blocks are extracted
//! from README.md (so they cannot drift), the ports are moved to free ones
//! on 127.0.0.1, and the real `krafter` binary does the rest. The delivered
//! request is verified here independently (HMAC computed by this test) and,
//! when the official `standardwebhooks` Python library can be installed from
//! PyPI, by the README's own verification snippet.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The first ```sh block after `marker` in the README.
fn block(readme: &str, marker: &str) -> String {
    let start = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md lacks the {marker} marker"));
    let rest = &readme[start..];
    let open = rest
        .find("```sh\n")
        .expect("a ```sh block after the marker")
        + "```sh\n".len();
    let len = rest[open..].find("\n```").expect("the block ends");
    rest[open..open + len + 1].to_string()
}

/// One run of the quickstart script, kept for the checks.
struct Run {
    /// The run's TMPDIR (`mktemp -d` makes the README's directory here).
    tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    /// `None` when it hung.
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
    /// The server's and the receiver's ports.
    ports: [u16; 2],
}

impl Run {
    /// See [`port_taken`].
    fn port_taken(&self) -> bool {
        port_taken(self.tmp.path(), &self.stderr, &self.ports)
    }
}

/// Whether a run failed because another process took one of its `ports`
/// between [`common::free_port`]'s check and the bind: `krafter serve` (in
/// its log, in the README's directory under `tmp`) or `krafter receive`
/// (on `stderr`) said "cannot listen on 127.0.0.1:<port>: Address already
/// in use".
fn port_taken(tmp: &Path, stderr: &str, ports: &[u16]) -> bool {
    let mut said = stderr.to_string();
    if let Ok(dirs) = std::fs::read_dir(tmp) {
        for dir in dirs.flatten() {
            if let Ok(log) = std::fs::read_to_string(dir.path().join("krafter.log")) {
                said.push_str(&log);
            }
        }
    }
    said.lines().any(|line| {
        line.contains("in use")
            && ports
                .iter()
                .any(|p| line.contains(&format!("cannot listen on 127.0.0.1:{p}:")))
    })
}

/// Runs the README's blocks (ports moved to free ones) once.
fn run_once(readme: &str) -> Run {
    let server_port = common::free_port();
    let receiver_port = common::free_port();
    let ports = |text: String| {
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{server_port}"))
            .replace("127.0.0.1:9000", &format!("127.0.0.1:{receiver_port}"))
    };
    let run = ports(block(readme, "<!-- quickstart:run"));
    let verify = ports(block(readme, "<!-- quickstart:verify"));
    let stop = ports(block(readme, "<!-- quickstart:stop"));
    assert!(run.contains("krafter send-test-event") && run.contains("krafter receive"));
    assert!(verify.contains("standardwebhooks"));

    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let script = format!(
        "set -e -o pipefail\n{run}\n\
         printf '%s' \"$PWD\" > \"$QS_STATE/cwd\"\n\
         printf '%s' \"$DST_SECRET\" > \"$QS_STATE/secret\"\n\
         set +e\n( set -e\n{verify}\n)\nQS_VERIFY_STATUS=$?\nset -e\n\
         echo \"QS_VERIFY_STATUS=$QS_VERIFY_STATUS\"\n{stop}\n"
    );
    let bin_dir = common::binary_dir();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("TMPDIR", tmp.path())
        .env("QS_STATE", &state)
        // What the README's port change needs for the default-port commands.
        .env("KRAFTER_SERVER__LISTEN", format!("127.0.0.1:{server_port}"))
        .env("KRAFTER_URL", format!("http://127.0.0.1:{server_port}"))
        // The network guard of every test server.
        .env("KRAFTER_DELIVERY__LOOPBACK_ONLY", "true")
        .env_remove("KRAFTER_API_KEY")
        .env_remove("KRAFTER_CONFIG")
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = child.id();
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let ports = [server_port, receiver_port];
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        // A server that could not bind leaves the script waiting on
        // whatever holds its port: no need to wait that out.
        if Instant::now() > deadline || port_taken(tmp.path(), "", &ports) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever happened, nothing the script started outlives the test.
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    Run {
        tmp,
        state,
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        ports,
    }
}

/// The README's commands run verbatim on free ports. A port is free when
/// chosen but the README's programs bind fixed ports, so another process
/// can take one in between; then (and only then: the bind error names the
/// port) the whole quickstart runs once more on fresh ports and a fresh
/// directory. Asserting the port free beforehand would not close that
/// window, and any other failure still fails at once.
#[test]
fn readme_quickstart_runs_end_to_end() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut run = run_once(&readme);
    if run.port_taken() {
        eprintln!(
            "ports {:?} were taken before the quickstart bound them; once more on fresh ports\n\
             --- stdout\n{}\n--- stderr\n{}",
            run.ports, run.stdout, run.stderr
        );
        run = run_once(&readme);
        assert!(
            !run.port_taken(),
            "ports {:?} were taken too before the quickstart bound them\n--- stdout\n{}\n--- stderr\n{}",
            run.ports,
            run.stdout,
            run.stderr
        );
    }
    let Run {
        state,
        status,
        stdout,
        stderr,
        ..
    } = &run;
    let status = status.unwrap_or_else(|| panic!("the quickstart hung\n{stdout}\n{stderr}"));
    let context = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.success(), "the quickstart failed\n{context}");

    // The receiver showed the delivered request and its signature verified.
    assert!(stdout.contains("--- POST /webhooks"), "{context}");
    assert!(
        stdout.contains("krafter-event-type: invoice.paid"),
        "{context}"
    );
    assert!(stdout.contains("signature: verified"), "{context}");
    assert!(!stdout.contains("NOT verified"), "{context}");
    // `events get` showed a succeeded delivery.
    assert!(stdout.contains(": succeeded"), "{context}");
    assert!(stdout.contains("attempt 1 at"), "{context}");

    // Independent check of what the app received.
    let cwd = std::fs::read_to_string(state.join("cwd")).unwrap();
    let secret = std::fs::read_to_string(state.join("secret")).unwrap();
    let saved = std::fs::read_to_string(Path::new(&cwd).join("delivered.jsonl")).unwrap();
    let request: Value = serde_json::from_str(saved.lines().next().unwrap()).unwrap();
    let headers = &request["headers"];
    let id = headers["webhook-id"].as_str().unwrap();
    let ts = headers["webhook-timestamp"].as_str().unwrap();
    let body = request["body"].as_str().unwrap();
    let expected = common::standard_webhooks_signature(&secret, id, ts, body.as_bytes());
    let signatures = headers["webhook-signature"].as_str().unwrap();
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "{signatures} vs {expected}"
    );
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["type"], "invoice.paid");
    assert!(id.starts_with("evt_"));

    // The README's verification with the official library.
    if stdout.contains("QS_VERIFY_STATUS=0") {
        assert!(
            stdout.contains("verified with the official standardwebhooks library: evt_"),
            "{context}"
        );
        return;
    }
    let venv_python = Path::new(&cwd).join(".venv/bin/python");
    let installed = Command::new(&venv_python)
        .args(["-c", "import standardwebhooks"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        !installed,
        "the official library is installed but the README's verification failed\n{context}"
    );
    eprintln!(
        "SKIPPED: the README's verification with the official standardwebhooks library \
         (python3 -m venv / pip install from PyPI did not work here)\n{context}"
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must be able to install standardwebhooks from PyPI"
    );
}
