//! Opaque tokens on the node: one introspection per token however many
//! requests carry it at once, answers cached up to `cache_ttl`, an
//! endpoint outage 503.

use std::time::Duration;

use super::support::idp::{Idp, Mode};
use super::support::origin::Origin;
use super::support::{Node, get_with, send};

fn config(origin: &Origin, idp: &Idp) -> String {
    format!(
        r#"
[auth.introspection.opaque]
endpoint = "http://127.0.0.1:{idp}/introspect"
client_id = "gateway"
client_secret = "introspection-secret"
cache_ttl = "1s"
negative_cache_ttl = "1s"

[services.echo]
url = "http://127.0.0.1:{origin}"

[[routes]]
path = "/o"
service = "echo"
auth = {{ any_of = ["opaque"] }}
"#,
        idp = idp.port,
        origin = origin.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_introspected_once_for_many_requests_and_again_after_cache_ttl() {
    let origin = Origin::start("127.0.0.1:0").await.unwrap();
    let idp = Idp::start(&[], 300).await;
    let node = Node::start(&config(&origin, &idp), &[]);
    let bearer = |token: &str| get_with("/o", "authorization", &format!("Bearer {token}"));

    // 100 requests at once with a token never seen: one introspection.
    let answers = futures::future::join_all((0..100).map(|_| send(node.addr, bearer("opaque-active-dana")))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(idp.introspections(), 1, "single flight");
    // The log says so too, once its 100 lines are written: one request
    // asked, 99 had its answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let asked = loop {
        let lines = node.access_log();
        let dana: Vec<_> = lines.iter().filter(|l| l["identity"] == "opaque:dana").collect();
        if dana.len() == 100 || std::time::Instant::now() > deadline {
            break dana.iter().filter(|l| l["auth"]["cached"] == false).count();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(asked, 1);
    // Inactive tokens too: one question, then remembered.
    let refused = futures::future::join_all((0..20).map(|_| send(node.addr, bearer("opaque-nobody")))).await;
    assert!(refused.iter().all(|a| a.status == 401));
    assert_eq!(idp.introspections(), 2);
    // Past cache_ttl the endpoint is asked again (a revoked token stops
    // passing within it); while it is down that is 503, never 401.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.set_mode(Mode::Fail);
    let down = send(node.addr, bearer("opaque-active-dana")).await;
    assert_eq!(down.status, 503);
    assert!(String::from_utf8_lossy(&down.body).contains("idp-unavailable"));
    idp.set_mode(Mode::Serve);
    assert_eq!(send(node.addr, bearer("opaque-active-dana")).await.status, 200);
    assert_eq!(idp.introspections(), 4);
}
