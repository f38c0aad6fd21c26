//! TLS and token authentication between a real coordinator process and real
//! worker processes on 127.0.0.1, with certificates generated at run time.
//! Good set-ups complete a short run. A wrong host name, an untrusted CA, a
//! missing or untrusted client certificate and a missing or wrong token are
//! rejected. The token must never reach a log or `config.json`.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use admm_proto::pb::coordinator_client::CoordinatorClient;
use admm_proto::pb::RegisterRequest;
use admm_proto::security::{ClientSecurity, ClientTlsFiles, SecretToken, TOKEN_ENV};
use common::command;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::Endpoint;

/// Maximum run time of a coordinator or worker process in these tests.
const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// Flags of the tiny regression problem, shared by both sides.
const PROBLEM: [&str; 6] = ["--hidden", "none", "--dim", "3", "--samples", "64"];

/// A certificate and its key, written as PEM files.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

/// The generated public-key infrastructure: a CA with a server and a client
/// certificate, and an unrelated CA with a client certificate of its own.
struct Pki {
    _dir: TempDir,
    ca: PathBuf,
    server: Pair,
    client: Pair,
    other_ca: PathBuf,
    other_client: Pair,
}

fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("empty name list");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key generation");
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(params, key))
}

fn new_leaf(
    dir: &Path,
    name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'static, KeyPair>,
) -> Pair {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("valid names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key generation");
    let cert = params.signed_by(&key, issuer).expect("signed certificate");
    let pair = Pair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pair.cert, cert.pem()).expect("write certificate");
    std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
    pair
}

fn generate_pki() -> Pki {
    let dir = tempfile::tempdir().expect("temporary directory");

    let (ca_cert, ca) = new_ca("admm test CA");
    let (other_cert, other) = new_ca("unrelated CA");
    let ca_path = dir.path().join("ca.pem");
    let other_path = dir.path().join("other-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write CA");
    std::fs::write(&other_path, other_cert.pem()).expect("write CA");

    let server_names = ["localhost", "127.0.0.1"];
    let server = new_leaf(
        dir.path(),
        "server",
        &server_names,
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    );
    let client = new_leaf(
        dir.path(),
        "client",
        &["worker"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca,
    );
    let other_client = new_leaf(
        dir.path(),
        "other-client",
        &["worker"],
        ExtendedKeyUsagePurpose::ClientAuth,
        &other,
    );

    Pki {
        _dir: dir,
        ca: ca_path,
        server,
        client,
        other_ca: other_path,
        other_client,
    }
}

/// Arguments from a mix of flags and paths.
fn args<const N: usize>(items: [&dyn AsRef<std::ffi::OsStr>; N]) -> Vec<OsString> {
    items.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// Waits for `child` up to [`PROCESS_LIMIT`], killing it past that.
fn wait_limited(child: &mut Child, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("process status") {
            return status;
        }
        if started.elapsed() > PROCESS_LIMIT {
            let _ = child.kill();
            panic!("{what} still running after {} s", PROCESS_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A coordinator process for one worker and two rounds.
struct Coordinator {
    child: Child,
    address: SocketAddr,
    run_dir: PathBuf,
    log: PathBuf,
}

impl Coordinator {
    fn start(dir: &Path, security: &[OsString], token_env: Option<&str>) -> Self {
        let address_file = dir.join("coordinator.address");
        let run_dir = dir.join("run");
        let log = dir.join("coordinator.log");
        let mut cmd = command("admm-coordinator");
        cmd.env("RUST_LOG", "debug")
            .env_remove(TOKEN_ENV)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--max-rounds",
                "2",
            ])
            .args(["--register-timeout", "60"])
            .args(PROBLEM)
            .arg("--address-file")
            .arg(&address_file)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(security)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create log"));
        if let Some(token) = token_env {
            cmd.env(TOKEN_ENV, token);
        }
        let mut child = cmd.spawn().expect("start admm-coordinator");
        let started = Instant::now();
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&address_file) {
                if let Ok(address) = text.trim().parse() {
                    break address;
                }
            }
            if let Some(status) = child.try_wait().expect("process status") {
                panic!("coordinator exited ({status}):\n{}", read_text(&log));
            }
            assert!(
                started.elapsed() < PROCESS_LIMIT,
                "coordinator did not listen:\n{}",
                read_text(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            address,
            run_dir,
            log,
        }
    }

    /// Waits for the run to end; returns the exit status and the log.
    fn finish(mut self) -> (ExitStatus, String) {
        let status = wait_limited(&mut self.child, "coordinator");
        (status, read_text(&self.log))
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of a process run to its end.
struct Finished {
    status: ExitStatus,
    log: String,
}

/// Runs `cmd` to its end with standard error in `dir/name.log`.
fn run_to_end(mut cmd: Command, dir: &Path, name: &str) -> Finished {
    let log = dir.join(format!("{name}.log"));
    cmd.stdout(Stdio::null())
        .stderr(File::create(&log).expect("create log"));
    let mut child = cmd.spawn().expect("start process");
    let status = wait_limited(&mut child, name);
    Finished {
        status,
        log: read_text(&log),
    }
}

/// Runs worker 0 against `coordinator` to its end.
fn run_worker(
    dir: &Path,
    name: &str,
    coordinator: &str,
    security: &[OsString],
    token_env: Option<&str>,
) -> Finished {
    let mut cmd = command("admm-worker");
    cmd.env("RUST_LOG", "debug")
        .env_remove(TOKEN_ENV)
        .args(["--coordinator", coordinator, "--worker-id", "0"])
        .args(["--connect-timeout", "2"])
        .args(PROBLEM)
        .args(security);
    if let Some(token) = token_env {
        cmd.env(TOKEN_ENV, token);
    }
    run_to_end(cmd, dir, name)
}

/// Sends a registration without a worker behind it and returns the
/// coordinator's status.
async fn register_status(address: SocketAddr, security: ClientSecurity) -> tonic::Status {
    let tls = security
        .tls_config()
        .expect("valid TLS files")
        .expect("TLS on");
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .expect("valid URL")
        .tls_config(tls)
        .expect("TLS set-up")
        .connect()
        .await
        .expect("TLS connection");
    let mut client = CoordinatorClient::with_interceptor(channel, security.attach_token());
    client
        .register(RegisterRequest::default())
        .await
        .expect_err("registration without the right token")
}

#[test]
fn tls_rejects_wrong_name_and_ca() {
    let pki = generate_pki();
    let dir = tempfile::tempdir().expect("temporary directory");
    let coordinator = Coordinator::start(
        dir.path(),
        &args([
            &"--tls-cert",
            &pki.server.cert,
            &"--tls-key",
            &pki.server.key,
        ]),
        None,
    );
    let address = coordinator.address.to_string();

    let wrong_name = run_worker(
        dir.path(),
        "wrong-name",
        &address,
        &args([&"--tls-ca", &pki.ca, &"--tls-domain", &"other.example"]),
        None,
    );
    assert!(!wrong_name.status.success(), "{}", wrong_name.log);
    assert!(
        wrong_name.log.contains("TLS handshake"),
        "{}",
        wrong_name.log
    );
    assert!(
        wrong_name.log.contains("other.example"),
        "{}",
        wrong_name.log
    );

    let untrusted = run_worker(
        dir.path(),
        "untrusted-ca",
        &address,
        &args([&"--tls-ca", &pki.other_ca]),
        None,
    );
    assert!(!untrusted.status.success(), "{}", untrusted.log);
    assert!(untrusted.log.contains("TLS handshake"), "{}", untrusted.log);
    assert!(untrusted.log.contains("UnknownIssuer"), "{}", untrusted.log);

    let plain = run_worker(dir.path(), "plain", &address, &[], None);
    assert!(!plain.status.success(), "{}", plain.log);

    let good = run_worker(
        dir.path(),
        "good",
        &address,
        &args([&"--tls-ca", &pki.ca]),
        None,
    );
    assert!(good.status.success(), "{}", good.log);
    let run_dir = coordinator.run_dir.clone();
    let (status, log) = coordinator.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("TLS is on"), "{log}");
    assert!(log.contains("token authentication is off"), "{log}");
    assert!(run_dir.join("config.json").is_file());
}

#[test]
fn mutual_tls_requires_trusted_client() {
    let pki = generate_pki();
    let dir = tempfile::tempdir().expect("temporary directory");
    let coordinator = Coordinator::start(
        dir.path(),
        &args([
            &"--tls-cert",
            &pki.server.cert,
            &"--tls-key",
            &pki.server.key,
            &"--tls-client-ca",
            &pki.ca,
        ]),
        None,
    );
    let address = coordinator.address.to_string();

    let anonymous = run_worker(
        dir.path(),
        "no-client-cert",
        &address,
        &args([&"--tls-ca", &pki.ca]),
        None,
    );
    assert!(!anonymous.status.success(), "{}", anonymous.log);
    // The worker's handshake completes before the coordinator checks its
    // certificate (TLS 1.3), so the alert shows only in tonic's debug log.
    assert!(
        anonymous.log.contains("CertificateRequired"),
        "{}",
        anonymous.log
    );

    let untrusted = run_worker(
        dir.path(),
        "untrusted-client-cert",
        &address,
        &args([
            &"--tls-ca",
            &pki.ca,
            &"--tls-cert",
            &pki.other_client.cert,
            &"--tls-key",
            &pki.other_client.key,
        ]),
        None,
    );
    assert!(!untrusted.status.success(), "{}", untrusted.log);
    assert!(untrusted.log.contains("UnknownCA"), "{}", untrusted.log);

    let good = run_worker(
        dir.path(),
        "good",
        &address,
        &args([
            &"--tls-ca",
            &pki.ca,
            &"--tls-cert",
            &pki.client.cert,
            &"--tls-key",
            &pki.client.key,
        ]),
        None,
    );
    assert!(good.status.success(), "{}", good.log);
    let (status, log) = coordinator.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("mutual=true"), "{log}");
}

#[test]
fn token_rejects_missing_and_wrong() {
    let pki = generate_pki();
    let dir = tempfile::tempdir().expect("temporary directory");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let token = format!("tok-{}-{nanos}", std::process::id());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let coordinator = Coordinator::start(
        dir.path(),
        &args([
            &"--tls-cert",
            &pki.server.cert,
            &"--tls-key",
            &pki.server.key,
            &"--token-file",
            &token_file,
        ]),
        None,
    );
    let address = coordinator.address.to_string();
    let tls = ClientTlsFiles {
        ca: pki.ca.clone(),
        domain: Some("localhost".into()),
        identity: None,
    };

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let missing = runtime.block_on(register_status(
        coordinator.address,
        ClientSecurity {
            tls: Some(tls.clone()),
            token: None,
        },
    ));
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert!(
        missing.message().contains("missing authentication token"),
        "{}",
        missing.message()
    );
    let wrong_token = SecretToken::new("not-the-token", "test").expect("valid token");
    let wrong = runtime.block_on(register_status(
        coordinator.address,
        ClientSecurity {
            tls: Some(tls),
            token: Some(wrong_token),
        },
    ));
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert!(
        wrong.message().contains("wrong authentication token"),
        "{}",
        wrong.message()
    );
    assert!(!wrong.message().contains("not-the-token"));

    let tls_flags = args([&"--tls-ca", &pki.ca]);
    let no_token = run_worker(dir.path(), "no-token", &address, &tls_flags, None);
    assert!(!no_token.status.success(), "{}", no_token.log);
    assert!(
        no_token.log.contains("missing authentication token"),
        "{}",
        no_token.log
    );

    let wrong_worker = run_worker(
        dir.path(),
        "wrong-token",
        &address,
        &tls_flags,
        Some("not-the-token"),
    );
    assert!(!wrong_worker.status.success(), "{}", wrong_worker.log);
    assert!(
        wrong_worker.log.contains("wrong authentication token"),
        "{}",
        wrong_worker.log
    );

    let mut good_flags = tls_flags.clone();
    good_flags.extend(args([&"--token-file", &token_file]));
    let good = run_worker(dir.path(), "good", &address, &good_flags, None);
    assert!(good.status.success(), "{}", good.log);

    let run_dir = coordinator.run_dir.clone();
    let (status, coordinator_log) = coordinator.finish();
    assert!(status.success(), "{coordinator_log}");
    assert!(coordinator_log.contains("rejected a call without a valid token"));
    assert!(
        coordinator_log.contains("reason=\"missing\""),
        "{coordinator_log}"
    );
    assert!(
        coordinator_log.contains("reason=\"wrong\""),
        "{coordinator_log}"
    );
    assert!(
        !coordinator_log.contains(&token),
        "token in the coordinator log"
    );
    assert!(!good.log.contains(&token), "token in the worker log");
    assert!(
        !no_token.log.contains(&token),
        "token in a rejected worker's log"
    );
    let config = read_text(&run_dir.join("config.json"));
    assert!(!config.is_empty(), "config.json missing");
    assert!(!config.contains(&token), "token in config.json");
    assert!(config.contains("\"token_set\": true"), "{config}");
}

#[test]
fn bad_files_are_named() {
    let pki = generate_pki();
    let dir = tempfile::tempdir().expect("temporary directory");

    let mut mismatched = command("admm-coordinator");
    mismatched
        .env_remove(TOKEN_ENV)
        .args(["--listen", "127.0.0.1:0"])
        .args(PROBLEM)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--tls-cert")
        .arg(&pki.server.cert)
        .arg("--tls-key")
        .arg(&pki.client.key);
    let mismatched = run_to_end(mismatched, dir.path(), "mismatched-key");
    assert!(!mismatched.status.success(), "{}", mismatched.log);
    assert!(
        mismatched.log.contains("does not match"),
        "{}",
        mismatched.log
    );
    assert!(
        mismatched.log.contains("client-key.pem"),
        "{}",
        mismatched.log
    );

    let missing_ca = dir.path().join("absent-ca.pem");
    let mut missing = command("admm-worker");
    missing
        .env_remove(TOKEN_ENV)
        .args(["--worker-id", "0", "--connect-timeout", "2"])
        .args(PROBLEM)
        .arg("--tls-ca")
        .arg(&missing_ca);
    let missing = run_to_end(missing, dir.path(), "missing-ca");
    assert!(!missing.status.success(), "{}", missing.log);
    assert!(missing.log.contains("absent-ca.pem"), "{}", missing.log);
    assert!(missing.log.contains("failed to read"), "{}", missing.log);

    let mut not_pem = command("admm-worker");
    not_pem
        .env_remove(TOKEN_ENV)
        .args(["--worker-id", "0", "--connect-timeout", "2"])
        .args(PROBLEM)
        .arg("--tls-ca")
        .arg(&pki.ca)
        .arg("--tls-cert")
        .arg(&pki.client.key)
        .arg("--tls-key")
        .arg(&pki.client.key);
    let not_pem = run_to_end(not_pem, dir.path(), "key-as-certificate");
    assert!(!not_pem.status.success(), "{}", not_pem.log);
    assert!(not_pem.log.contains("CERTIFICATE"), "{}", not_pem.log);
    assert!(not_pem.log.contains("client-key.pem"), "{}", not_pem.log);

    let mut unpaired = command("admm-worker");
    unpaired
        .env_remove(TOKEN_ENV)
        .args(["--worker-id", "0"])
        .args(PROBLEM)
        .arg("--tls-ca")
        .arg(&pki.ca)
        .arg("--tls-cert")
        .arg(&pki.client.cert);
    let unpaired = run_to_end(unpaired, dir.path(), "cert-without-key");
    assert!(!unpaired.status.success(), "{}", unpaired.log);
    assert!(unpaired.log.contains("--tls-key"), "{}", unpaired.log);
}
