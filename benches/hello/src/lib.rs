//! Hello-world components, one per flavour (`--features p3` or `p2`).

#[cfg(feature = "p2")]
extern crate spin_sdk_v5 as spin_sdk;

#[cfg(feature = "p3")]
#[spin_sdk::http_service]
async fn hello(_req: spin_sdk::http::Request) -> &'static str {
    "hello, world\n"
}

#[cfg(feature = "p2")]
#[spin_sdk::http_component]
fn hello(_req: spin_sdk::http::Request) -> spin_sdk::http::Response {
    spin_sdk::http::Response::new(200, "hello, world\n")
}
