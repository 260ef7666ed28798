//! Auth (401/403 per the contract) and startup refusals (one clear line, non-zero
//! exit, nothing listening), against the real binary.

mod common;

use std::process::Command;

use common::{binary, heartbeat, Server};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "a-test-secret-of-enough-length";

fn token(claims: Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
    encode(&Header::default(), &claims, &key).expect("encode token")
}

fn exp_in(seconds: i64) -> i64 {
    progressd::clock::now_ms() as i64 / 1000 + seconds
}

async fn post_as(server: &Server, bearer: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = server.client.post(server.url("/v1/heartbeats")).json(body);
    if let Some(t) = bearer {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    common::decode(req.send().await.expect("post")).await
}

#[tokio::test]
async fn auth_401_and_403_cases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let server = Server::start(
        "memory://",
        &[
            "--auth-secret-file",
            secret_file.to_str().expect("utf-8 path"),
        ],
    );

    let alice = token(json!({"sub": "alice", "exp": exp_in(600)}), SECRET);
    let service = token(
        json!({"sub": "lms", "scope": "service", "exp": exp_in(600)}),
        SECRET,
    );
    let expired = token(json!({"sub": "alice", "exp": exp_in(-600)}), SECRET);
    let no_exp = token(json!({"sub": "alice"}), SECRET);
    let forged = token(
        json!({"sub": "alice", "exp": exp_in(600)}),
        "another-secret-entirely!!",
    );
    let mine = heartbeat("alice", "s", 1, 10);
    let theirs = heartbeat("bob", "s", 1, 10);

    let cases: Vec<(Option<&str>, Value, u16)> = vec![
        (Some(&alice), mine.clone(), 200),
        (None, mine.clone(), 401),
        (Some("not.a.jwt"), mine.clone(), 401),
        (Some(&expired), mine.clone(), 401),
        (Some(&no_exp), mine.clone(), 401),
        (Some(&forged), mine.clone(), 401),
        (Some(&alice), theirs.clone(), 403),
        (Some(&alice), json!([mine.clone(), theirs.clone()]), 403),
        (Some(&service), theirs.clone(), 200),
    ];
    for (i, (bearer, body, want)) in cases.into_iter().enumerate() {
        let (status, reply) = post_as(&server, bearer, &body).await;
        assert_eq!(status, want, "case {i}: {reply}");
        if want != 200 {
            let code = if want == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_eq!(reply["error"]["code"], code, "case {i}");
        }
    }

    let get = |path: &str, bearer: &str| {
        server
            .client
            .get(server.url(path))
            .header("Authorization", format!("Bearer {bearer}"))
            .send()
    };
    assert_eq!(
        get("/v1/progress/alice/s", &alice)
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(
        get("/v1/progress/bob/s", &alice)
            .await
            .expect("get")
            .status(),
        403
    );
    assert_eq!(
        get("/v1/progress/bob", &service)
            .await
            .expect("get")
            .status(),
        200
    );
    assert_eq!(server.get("/v1/progress/alice").await.0, 401);
    // Who asks is checked first: no token and a malformed id or query is still 401.
    assert_eq!(server.get("/v1/progress/not%20an%20id").await.0, 401);
    let (status, _) = common::decode(
        server
            .client
            .post(server.url("/v1/heartbeats?ack=sometimes"))
            .json(&mine)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 401);
    // The scheme name is case-insensitive.
    let lowercase = server
        .client
        .get(server.url("/v1/progress/alice/s"))
        .header("Authorization", format!("bearer {alice}"))
        .send()
        .await
        .expect("get");
    assert_eq!(lowercase.status(), 200);
    for open in ["/healthz", "/readyz", "/metrics"] {
        let status = server
            .client
            .get(server.url(open))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, 200, "{open} needs no token");
    }
    // The refused write for bob by alice changed nothing; the service's write did.
    let (_, body) = common::decode(get("/v1/progress/bob/s", &service).await.expect("get")).await;
    assert_eq!(body["seq"], 1);
}

fn refuses(args: &[&str], envs: &[(&str, &str)], expect_in_message: &str) {
    let out = Command::new(binary())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run");
    assert!(!out.status.success(), "{args:?} must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expect_in_message), "{args:?}: {stderr}");
    assert!(!stderr.contains("listening on"), "{args:?} must not listen");
}

#[test]
fn bad_startup_values_exit_with_one_clear_line() {
    let serve = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec!["serve", "--store", "memory://", "--listen", "127.0.0.1:0"];
        v.extend_from_slice(extra);
        v
    };
    refuses(
        &serve(&["--flush-interval", "0s"]),
        &[],
        "greater than zero",
    );
    refuses(
        &serve(&["--flush-interval", "soon"]),
        &[],
        "--flush-interval",
    );
    refuses(&serve(&["--shards", "0"]), &[], "at least 1");
    refuses(
        &["serve", "--store", "postgres://x"],
        &[],
        "unknown store URL",
    );
    refuses(
        &["serve", "--store", "memory://", "--listen", "0.0.0.0:0"],
        &[],
        "without auth",
    );
    refuses(
        &serve(&["--auth-secret-file", "/nonexistent/secret"]),
        &[],
        "--auth-secret-file",
    );
    refuses(
        &serve(&[]),
        &[("PROGRESSD_AUTH_SECRET", "short")],
        "at least 16 bytes",
    );
    // No flag takes the secret itself: a command line is visible to every local user.
    refuses(
        &serve(&["--auth-secret", SECRET]),
        &[],
        "unexpected argument '--auth-secret'",
    );
    refuses(
        &serve(&[]),
        &[("PROGRESSD_FLUSH_INTERVAL", "-1s")],
        "flush-interval",
    );
}

#[test]
fn help_shows_defaults_and_env_twins() {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[env: PROGRESSD_LISTEN=]",
        "[default: 127.0.0.1:8080]",
        "[default: sqlite://./progressd-data/progress.db]",
        "[env: PROGRESSD_FLUSH_INTERVAL=]",
        "[default: 1s]",
        "PROGRESSD_AUTH_SECRET_FILE",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
