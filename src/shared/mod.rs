//! What every layer may use and nothing else: the bottom of the import
//! order (`pipeline` → `config`, `ports` → `shared`; see ARCHITECTURE.md).

pub(crate) mod cache;
pub(crate) mod entropy;
pub mod gcra;
pub(crate) mod grpc;
pub(crate) mod headers;
pub mod hex;
pub(crate) mod http_cache;
pub mod identity;
pub(crate) mod ip_text;
pub(crate) mod lease;
pub(crate) mod networks;
pub(crate) mod path;
pub(crate) mod problem;
pub mod quota;
pub mod tls;
pub(crate) mod window;
