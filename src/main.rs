//! The `portcullis` binary: the node home of the gateway, and its tools.

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the binary: files, environment and clocks are its job

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::Duration;

    use clap::{Parser, Subcommand};
    use portcullis::config::{Config, spin};
    use portcullis::native::client::PoolLimits;
    use portcullis::native::conn::{ConnectionLimits, fd_limit};
    use portcullis::native::consumers::{self, Consumer};
    use portcullis::native::load_config;
    use portcullis::native::registry::{self, Follow, RegistryError};
    use portcullis::native::server::{ServeOptions, Store, serve};

    #[derive(Parser)]
    #[command(name = "portcullis", version, about = "An API gateway: one core, at the edge and on the node")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    /// Bounds on client connections and on idle connections to origins.
    /// Connection counts default from the open-file limit (`ulimit -n`): two
    /// descriptors per connection after a reserve of 64, an eighth of that
    /// per client IP.
    #[derive(clap::Args)]
    struct ConnectionFlags {
        /// Client connections open at once; past it the node waits to accept.
        #[arg(long)]
        max_connections: Option<usize>,
        /// Client connections open at once from one IP; past it new ones are closed.
        #[arg(long)]
        max_connections_per_ip: Option<usize>,
        /// Time from accept to the first complete request head, whatever the protocol.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        first_request_timeout: Duration,
        /// Time a kept-alive connection may sit without a request.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        idle_timeout: Duration,
        /// Interval of HTTP/2 pings (a peer that does not answer within it is dropped).
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        h2_keepalive: Duration,
        /// HTTP/2 streams open at once on one client connection (beyond: REFUSED_STREAM).
        #[arg(long, default_value = "128")]
        h2_max_streams: u32,
        /// Idle connections kept per origin, by each worker.
        #[arg(long, default_value = "128")]
        upstream_max_idle: usize,
        /// Time an idle connection to an origin is kept.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        upstream_idle_timeout: Duration,
        /// Upgraded (WebSocket) connections open at once; past it an upgrade
        /// gets 503. Default: a quarter of --max-connections.
        #[arg(long)]
        max_upgraded: Option<usize>,
    }

    impl ConnectionFlags {
        fn limits(&self) -> Result<(ConnectionLimits, PoolLimits), String> {
            let mut limits = ConnectionLimits::from_fd_limit(fd_limit());
            if let Some(n) = self.max_connections {
                limits.max_connections = n;
                limits.max_per_ip = limits.max_per_ip.min(n);
            }
            if let Some(n) = self.max_connections_per_ip {
                limits.max_per_ip = n;
            }
            if limits.max_connections == 0 || limits.max_per_ip == 0 {
                return Err("--max-connections and --max-connections-per-ip must be at least 1".into());
            }
            if limits.max_per_ip > limits.max_connections {
                return Err(format!(
                    "--max-connections-per-ip ({}) is above --max-connections ({})",
                    limits.max_per_ip, limits.max_connections
                ));
            }
            for (flag, d) in [
                ("--first-request-timeout", self.first_request_timeout),
                ("--idle-timeout", self.idle_timeout),
                ("--h2-keepalive", self.h2_keepalive),
            ] {
                if d.is_zero() {
                    return Err(format!("{flag} must be above zero"));
                }
            }
            limits.first_request_timeout = self.first_request_timeout;
            limits.idle_timeout = self.idle_timeout;
            limits.h2_keepalive = self.h2_keepalive;
            if self.h2_max_streams == 0 {
                return Err("--h2-max-streams must be at least 1".into());
            }
            limits.h2_max_streams = self.h2_max_streams;
            let pool = PoolLimits {
                max_idle_per_origin: self.upstream_max_idle,
                idle_timeout: self.upstream_idle_timeout,
                max_upgraded: self.max_upgraded.unwrap_or((limits.max_connections / 4).max(1)),
            };
            Ok((limits, pool))
        }
    }

    #[derive(clap::Args)]
    struct ServeArgs {
        /// The gateway config.
        #[arg(long, default_value = "routes/gateway.toml")]
        config: PathBuf,
        /// A plaintext listener for every host, besides the config's
        /// `[[listeners]]` (port 0: any free port; the log says which).
        /// Default: 127.0.0.1:8080 when the config has no listeners.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Workers serving client connections (default: one per core):
        /// each a thread with its own runtime, its own socket on every
        /// listener (SO_REUSEPORT) and its own connections to origins.
        #[arg(long)]
        workers: Option<usize>,
        /// Time in-flight requests get to finish after SIGTERM/SIGINT.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        /// Time a client may take to send an HTTP/1.1 request head, from
        /// when one is awaited (a kept connection idle this long closes too).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        header_read_timeout: Duration,
        /// Shared state (rate limits, key sets): `memory`, or a Redis URL
        /// (`redis://127.0.0.1:6379`) for a fleet, or some nodes of a Redis
        /// Cluster (`redis-cluster://10.0.0.1:6379,10.0.0.2:6379`).
        #[arg(long, default_value = "memory")]
        store: String,
        /// Deadline for each store call (Redis).
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        store_timeout: Duration,
        /// Connections to the store (Redis), used round-robin.
        #[arg(long, default_value = "4")]
        store_connections: usize,
        #[command(flatten)]
        connections: ConnectionFlags,
        /// Where `/metrics` is served (Prometheus, OpenMetrics text); `off` to serve none.
        #[arg(long, default_value = "127.0.0.1:9090", value_parser = listen_or_off)]
        metrics_listen: Listen,
        /// Where the admin API is served (healthz, readyz, config, reload,
        /// upstreams); `off` to serve none. Beyond loopback it needs a token
        /// in the config's `[admin]`.
        #[arg(long, default_value = "127.0.0.1:8443", value_parser = listen_or_off)]
        admin_listen: Listen,
        /// Export the spans of sampled requests to this OTLP/HTTP endpoint
        /// (e.g. http://127.0.0.1:4318); sampling is the config's
        /// `gateway.trace_sample_ratio` for new traces, the client's choice
        /// for continued ones.
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        /// Follow the registry in this Redis (`redis://…` or
        /// `redis-cluster://…`) instead of `--config`: run its current
        /// version and each one `portcullis publish` makes current.
        #[arg(long, conflicts_with = "config")]
        config_from: Option<String>,
        /// Where a node that follows the registry keeps the last version it
        /// applied, to start on while the registry is unreachable (relative
        /// paths in published configs start from its folder).
        #[arg(long, default_value = "portcullis-state/published.json")]
        config_cache: PathBuf,
        /// How often a node that follows the registry checks its current
        /// version (it also learns of each one as it is published) and
        /// reports the version it runs.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        config_check: Duration,
        /// This node's name in `portcullis versions` (default: host name and process id).
        #[arg(long)]
        node_id: Option<String>,
    }

    /// The registry the fleet follows.
    #[derive(clap::Args)]
    struct RegistryFlags {
        /// The registry's Redis: a redis:// or redis-cluster:// URL.
        #[arg(long)]
        store: String,
    }

    /// A listener address, or none.
    #[derive(Clone, Copy)]
    struct Listen(Option<SocketAddr>);

    fn listen_or_off(text: &str) -> Result<Listen, String> {
        if text == "off" {
            return Ok(Listen(None));
        }
        text.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|e| format!("`{text}`: {e} (an address such as 127.0.0.1:9090, or `off`)"))
    }

    #[derive(Subcommand)]
    enum Command {
        /// Run the gateway.
        Serve(Box<ServeArgs>),
        /// Print the SHA-256 of an API key for a consumer's `key_sha256`.
        /// The key is read from standard input (so it stays out of shell
        /// history); `--generate` makes a new random key and prints both.
        HashKey {
            #[arg(long)]
            generate: bool,
        },
        /// Canary rollouts.
        Canary {
            #[command(subcommand)]
            action: CanaryAction,
        },
        /// Quotas (`[limits.NAME] quota = ...`).
        Quota {
            #[command(subcommand)]
            action: QuotaAction,
        },
        /// The response cache (`routes[].cache`).
        Cache {
            #[command(subcommand)]
            action: CacheAction,
        },
        /// Check a config as `check` does, then publish it to the registry
        /// as its next version: every node that follows the registry runs
        /// it within a second.
        Publish {
            /// The gateway config.
            config: PathBuf,
            #[command(flatten)]
            registry: RegistryFlags,
            /// What changed, shown by `versions`.
            #[arg(long, short)]
            message: Option<String>,
            /// Who published it (default: $USER).
            #[arg(long, env = "USER")]
            author: Option<String>,
        },
        /// List the registry's kept versions, the current one, and which
        /// version each following node runs (JSON).
        Versions {
            #[command(flatten)]
            registry: RegistryFlags,
        },
        /// Make a kept version current again (it must compile here).
        Rollback {
            /// The version number (`versions` lists them).
            version: u64,
            #[command(flatten)]
            registry: RegistryFlags,
        },
        /// API-key consumers in the registry: every node that follows it
        /// accepts (or refuses) their keys within a second.
        Consumers {
            #[command(subcommand)]
            action: ConsumersAction,
        },
        /// Validate a config; exits 1 and prints file:line:column: key: problem for each error.
        Check {
            /// The gateway config.
            #[arg(default_value = "routes/gateway.toml")]
            config: PathBuf,
            /// Spin manifest whose allowed_outbound_hosts must cover every origin
            /// (default: spin.toml in the current directory, if there is one).
            #[arg(long)]
            spin_manifest: Option<PathBuf>,
        },
    }

    #[derive(Subcommand)]
    enum ConsumersAction {
        /// Add a consumer (or replace the one with the same key). The key
        /// is read from standard input, or made with `--generate` (printed
        /// once), or given as its hash with `--key-sha256`.
        Add {
            /// The `[auth.api_key.NAME]` provider whose keys it holds.
            #[arg(long)]
            provider: String,
            #[arg(long)]
            id: String,
            /// A group it is in (repeatable): what `groups` on limits and routes select.
            #[arg(long = "group")]
            groups: Vec<String>,
            /// A scope it has (repeatable).
            #[arg(long = "scope")]
            scopes: Vec<String>,
            /// An address range it may call from (repeatable).
            #[arg(long)]
            ip_allow: Vec<String>,
            /// An address range it may not call from (repeatable).
            #[arg(long)]
            ip_deny: Vec<String>,
            #[arg(long, conflicts_with = "generate")]
            key_sha256: Option<String>,
            #[arg(long)]
            generate: bool,
            #[command(flatten)]
            registry: RegistryFlags,
        },
        /// Revoke every key of a consumer.
        Revoke {
            #[arg(long)]
            provider: String,
            #[arg(long)]
            id: String,
            #[command(flatten)]
            registry: RegistryFlags,
        },
        /// List the consumers (JSON, one per line; key hashes, never keys).
        List {
            #[command(flatten)]
            registry: RegistryFlags,
        },
        /// Add every consumer of a TOML file of `[[consumers]]` tables
        /// (provider, id, key_sha256, groups, scopes, ip_allow, ip_deny):
        /// all checked first, none added if one is wrong.
        Import {
            file: PathBuf,
            #[command(flatten)]
            registry: RegistryFlags,
        },
    }

    #[derive(Subcommand)]
    enum CanaryAction {
        /// Clear a route's rolled-back (or promoted) canary in the store the
        /// fleet shares: every node and edge instance starts it afresh.
        Reset {
            /// The route's name.
            route: String,
            /// The gateway config.
            #[arg(long, default_value = "routes/gateway.toml")]
            config: PathBuf,
            /// The fleet's store: a redis:// or redis-cluster:// URL.
            #[arg(long)]
            store: String,
        },
    }

    #[derive(Subcommand)]
    enum CacheAction {
        /// Purge the response cache in the store the fleet shares: entries
        /// stored before now that a route, a tag or a URL names are dropped
        /// on every node and edge instance within a second.
        Purge {
            /// A route with a cache, by name.
            #[arg(long, group = "target")]
            route: Option<String>,
            /// A tag the origin gave entries (the route's `tags_header`).
            #[arg(long, group = "target")]
            tag: Option<String>,
            /// A URL as clients call it: https://host/path?query.
            #[arg(long, group = "target")]
            url: Option<String>,
            /// The gateway config.
            #[arg(long, default_value = "routes/gateway.toml")]
            config: PathBuf,
            /// The fleet's store: a redis:// or redis-cluster:// URL.
            #[arg(long)]
            store: String,
        },
    }

    #[derive(Subcommand)]
    enum QuotaAction {
        /// Print (as JSON) what a caller has used of each quota in its
        /// current window, from the store the fleet shares.
        Usage {
            /// The caller as the policies count it: consumer:<provider>:<id>,
            /// subject:<provider>:<sub>, header:<value>, cookie:<value> or ip:<address>.
            caller: String,
            /// The gateway config.
            #[arg(long, default_value = "routes/gateway.toml")]
            config: PathBuf,
            /// The fleet's store: a redis:// or redis-cluster:// URL.
            #[arg(long)]
            store: String,
        },
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match cli.command {
            Command::Serve(args) => {
                let ServeArgs {
                    config,
                    listen,
                    workers,
                    drain_timeout,
                    header_read_timeout,
                    store,
                    store_timeout,
                    store_connections,
                    connections,
                    metrics_listen,
                    admin_listen,
                    otlp_endpoint,
                    config_from,
                    config_cache,
                    config_check,
                    node_id,
                } = *args;
                if let Some(url) = config_from.as_deref().filter(|u| !portcullis::native::redis_kv::is_redis_url(u)) {
                    eprintln!("--config-from: `{url}` is not a redis:// or redis-cluster:// URL");
                    return ExitCode::from(2);
                }
                if config_check.is_zero() {
                    eprintln!("--config-check must be above zero");
                    return ExitCode::from(2);
                }
                let follow = config_from.map(|url| Follow {
                    url,
                    cache: config_cache,
                    check_every: config_check,
                    node_id: node_id.unwrap_or_else(default_node_id),
                });
                let (connections, upstream_pool) = match connections.limits() {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                };
                let store = match store.as_str() {
                    "memory" => Store::Memory,
                    url if portcullis::native::redis_kv::is_redis_url(url) => {
                        Store::Redis { url: url.to_string(), connections: store_connections, timeout: store_timeout }
                    }
                    other => {
                        eprintln!(
                            "--store: `{other}` is neither `memory`, a redis:// URL nor redis-cluster://host:port,…"
                        );
                        return ExitCode::from(2);
                    }
                };
                let workers = match workers {
                    Some(0) => {
                        eprintln!("--workers must be at least 1");
                        return ExitCode::from(2);
                    }
                    Some(n) => n,
                    None => std::thread::available_parallelism().map_or(1, usize::from),
                };
                init_tracing();
                // A current-thread runtime: with one worker it serves the
                // connections too (no work-stealing scheduler: faster on one
                // core, benches/README.md); with more, each worker has its own.
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("cannot start the runtime: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let opts = ServeOptions {
                    config,
                    listen,
                    drain_timeout,
                    header_read_timeout,
                    connections,
                    upstream_pool,
                    store,
                    metrics_listen: metrics_listen.0,
                    admin_listen: admin_listen.0,
                    otlp_endpoint: otlp_endpoint.filter(|e| !e.is_empty()),
                    follow,
                    workers,
                };
                match runtime.block_on(serve(opts)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        eprintln!("portcullis: {e:#}");
                        ExitCode::from(2)
                    }
                }
            }
            Command::Check { config, spin_manifest } => check(&config, spin_manifest.as_deref()),
            Command::Consumers { action } => consumers_command(action),
            Command::Publish { config, registry, message, author } => run("publish", async move {
                match registry::publish(&config, &registry.store, message, author).await {
                    Ok(version) => Ok(format!("published {} as version {version}", config.display())),
                    Err(RegistryError::Invalid(errors)) => Err(format!("the config was not published:\n{errors}")),
                    Err(e) => Err(e.to_string()),
                }
            }),
            Command::Versions { registry } => run_registry("versions", async move {
                let listed = registry::versions(&registry.store).await?;
                Ok(serde_json::to_string_pretty(&listed).unwrap_or_default())
            }),
            Command::Rollback { version, registry } => run_registry("rollback", async move {
                let back = registry::rollback(&registry.store, version).await?;
                Ok(format!("version {version} ({}, {}) is current again", back.file, back.published_at))
            }),
            Command::HashKey { generate } => hash_key(generate),
            Command::Canary { action: CanaryAction::Reset { route, config, store } } => {
                canary_reset(&config, &route, &store)
            }
            Command::Quota { action: QuotaAction::Usage { caller, config, store } } => {
                quota_usage(&config, &caller, &store)
            }
            Command::Cache { action: CacheAction::Purge { route, tag, url, config, store } } => {
                store_command(&config, "cache purge", |config| async move {
                    let purged = portcullis::native::purge_cache(
                        &config,
                        route.as_deref(),
                        tag.as_deref(),
                        url.as_deref(),
                        &store,
                    )
                    .await?;
                    Ok(format!("purged {purged}: every copy drops what it stored before now within a second"))
                })
            }
        }
    }

    fn quota_usage(path: &Path, caller: &str, store: &str) -> ExitCode {
        store_command(path, "quota usage", |config| async move {
            portcullis::native::quota_usage(&config, caller, store).await.map(|usage| usage.to_string())
        })
    }

    fn canary_reset(path: &Path, route: &str, store: &str) -> ExitCode {
        store_command(path, "canary reset", |config| async move {
            let key = portcullis::native::reset_canary(&config, route, store).await?;
            Ok(format!("canary of route `{route}` reset ({key} cleared); instances follow within their sync"))
        })
    }

    /// A command on the fleet's store with the config at `path`: what it
    /// says printed, or its error as `portcullis NAME: …`.
    fn store_command<F, Fut>(path: &Path, name: &str, command: F) -> ExitCode
    where
        F: FnOnce(Config) -> Fut,
        Fut: Future<Output = Result<String, String>>,
    {
        match load_config(path) {
            Ok(config) => run(name, command(config)),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        }
    }

    /// A registry command (`run`, its error type named: the commands' `?` converts into it).
    fn run_registry(name: &str, command: impl Future<Output = Result<String, RegistryError>>) -> ExitCode {
        run(name, command)
    }

    /// A command on a runtime of its own: what it says printed, or its
    /// error as `portcullis NAME: …`.
    fn run<E: std::fmt::Display>(name: &str, command: impl Future<Output = Result<String, E>>) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(command) {
            Ok(said) => {
                println!("{said}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis {name}: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn consumers_command(action: ConsumersAction) -> ExitCode {
        match action {
            ConsumersAction::Add {
                provider,
                id,
                groups,
                scopes,
                ip_allow,
                ip_deny,
                key_sha256,
                generate,
                registry,
            } => {
                let (key, key_sha256) = match (key_sha256, generate) {
                    (Some(hash), _) => (None, hash),
                    (None, generate) => match new_or_given_key(generate) {
                        Ok(key) => {
                            let hash =
                                portcullis::shared::hex::hex(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
                            (generate.then_some(key), hash)
                        }
                        Err(e) => {
                            eprintln!("{e}");
                            return ExitCode::FAILURE;
                        }
                    },
                };
                let consumer = Consumer {
                    provider,
                    id,
                    key_sha256,
                    groups,
                    scopes,
                    ip_allow: (!ip_allow.is_empty()).then_some(ip_allow),
                    ip_deny: (!ip_deny.is_empty()).then_some(ip_deny),
                    added_at: String::new(),
                };
                run_registry("consumers add", async move {
                    let said = format!("added {}/{} ({})", consumer.provider, consumer.id, consumer.key_sha256);
                    consumers::add(&registry.store, consumer).await?;
                    Ok(match key {
                        Some(key) => format!("{said}\nkey: {key}"),
                        None => said,
                    })
                })
            }
            ConsumersAction::Revoke { provider, id, registry } => run_registry("consumers revoke", async move {
                match consumers::revoke(&registry.store, &provider, &id).await? {
                    0 => Err(RegistryError::Consumer(format!("no consumer {provider}/{id} in the registry"))),
                    n => Ok(format!("revoked {n} key(s) of {provider}/{id}")),
                }
            }),
            ConsumersAction::List { registry } => run_registry("consumers list", async move {
                let all = consumers::list_all(&registry.store).await?;
                Ok(all.iter().filter_map(|c| serde_json::to_string(c).ok()).collect::<Vec<_>>().join("\n"))
            }),
            ConsumersAction::Import { file, registry } => run_registry("consumers import", async move {
                let n = consumers::import(&registry.store, &file).await?;
                Ok(format!("imported {n} consumers from {}", file.display()))
            }),
        }
    }

    /// A new random key, or the one on standard input.
    fn new_or_given_key(generate: bool) -> Result<String, String> {
        use base64::Engine;
        if generate {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
            return Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        }
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
            return Err("give the key on standard input (echo -n 'the-key' | portcullis …) or --generate".into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// The host name and the process id.
    fn default_node_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    }

    fn hash_key(generate: bool) -> ExitCode {
        use sha2::Digest;
        let key = match new_or_given_key(generate) {
            Ok(key) => key,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let hex = portcullis::shared::hex::hex(&sha2::Sha256::digest(key.as_bytes()));
        if generate {
            println!("key:        {key}");
            println!("key_sha256: {hex}");
        } else {
            println!("{hex}");
        }
        ExitCode::SUCCESS
    }

    fn init_tracing() {
        let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_env_filter(filter).init();
    }

    fn check(path: &Path, manifest: Option<&Path>) -> ExitCode {
        let config = match load_config(path) {
            Ok(c) => c,
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        };
        // The files the node's listeners read (certificates, keys, CAs, CRLs).
        if let Err(errors) = portcullis::native::check_files(&config, path.parent().unwrap_or(Path::new(""))) {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
        let manifest =
            manifest.map(Path::to_path_buf).or_else(|| Some(PathBuf::from("spin.toml")).filter(|p| p.exists()));
        if let Some(manifest) = manifest {
            match check_spin(path, &manifest) {
                Ok(problems) if problems.is_empty() => {}
                Ok(problems) => {
                    for p in problems {
                        eprintln!("{}: {p}", manifest.display());
                    }
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("{}: {e}", manifest.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        let (services, routes) = config.size();
        println!("{}: ok ({services} services, {routes} routes)", path.display());
        ExitCode::SUCCESS
    }

    /// The edge resolves placeholders from Spin variables, so the manifest's
    /// defaults decide which origins the component will call.
    fn check_spin(path: &Path, manifest: &Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(manifest).map_err(|e| e.to_string())?;
        let config_text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut problems = spin::undeclared_variables(&config_text, &text)?;
        if !problems.is_empty() {
            return Ok(problems);
        }
        let vars = spin::default_variables(&text)?;
        let edge = match Config::parse(&config_text, &path.display().to_string(), &vars) {
            Ok(c) => c,
            Err(e) => {
                return Ok(vec![format!("with the manifest's variable defaults the config does not compile:\n{e}")]);
            }
        };
        problems.extend(spin::missing_outbound_hosts(&edge, &text)?);
        let (errors, warnings) = spin::edge_problems(&edge);
        for w in warnings {
            eprintln!("{}: warning: {w}", path.display());
        }
        problems.extend(errors);
        Ok(problems)
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// The node binary is not built for wasm; `edge-deploy/build.sh` builds the component.
#[cfg(target_arch = "wasm32")]
fn main() {}
