//! Hello-world components, one per flavour (`--features p3` or `p2`): the
//! benchmark baseline, what any component costs in its host before
//! Portcullis' work. `/hello` answers at once; any other path makes the one
//! outbound call a gateway makes (GET the origin's `/hello`, its port from
//! the Spin variable `origin_port`) and answers with what came back;
//! `/proxy-kv` first writes one key of the default key-value store (the
//! least any exact limit shared by instances must do: one atomic write per
//! admitted request).

#[cfg(feature = "p2")]
extern crate spin_sdk_v5 as spin_sdk;

#[cfg(feature = "p3")]
#[spin_sdk::http_service]
async fn hello(
    req: spin_sdk::http::Request,
) -> Result<spin_sdk::http::Response<spin_sdk::http::BoxBody>, spin_sdk::http::Error> {
    use spin_sdk::http::{FullBody, Response, box_body};
    if req.uri().path() == "/hello" {
        return Ok(Response::new(box_body(FullBody::new(bytes::Bytes::from_static(b"hello, world\n")))));
    }
    if req.uri().path() == "/proxy-kv" {
        let store = spin_sdk::key_value::Store::open_default().await.map_err(|e| e.to_string())?;
        store.set("hello:kv", &stamp()).await.map_err(|e| e.to_string())?;
    }
    let port = spin_sdk::variables::get("origin_port").await.map_err(|e| e.to_string())?;
    let resp = spin_sdk::http::get(format!("http://127.0.0.1:{port}/hello")).await?;
    Ok(resp.map(box_body))
}

#[cfg(feature = "p2")]
#[spin_sdk::http_component]
async fn hello(req: spin_sdk::http::Request) -> anyhow::Result<spin_sdk::http::Response> {
    use spin_sdk::http::{Request, Response};
    if req.path() == "/hello" {
        return Ok(Response::new(200, "hello, world\n"));
    }
    if req.path() == "/proxy-kv" {
        spin_sdk::key_value::Store::open_default()?.set("hello:kv", &stamp())?;
    }
    let port = spin_sdk::variables::get("origin_port")?;
    let resp: Response = spin_sdk::http::send(Request::get(format!("http://127.0.0.1:{port}/hello"))).await?;
    Ok(resp)
}

/// A value that differs from the last one written (the time, in nanoseconds).
fn stamp() -> Vec<u8> {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_nanos().to_le_bytes().to_vec()
}
