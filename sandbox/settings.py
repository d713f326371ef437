"""Settings of ``dsbroker sandbox serve`` (the owner side): each a field with its help."""

from __future__ import annotations

from dataclasses import dataclass

from dsbroker.identity.tokens import ALLOWED_ALGORITHMS
from dsbroker.settings import JWT_HELP, OPERATIONS_HELP, MiB, TRANSPORT_HELP, setting


@dataclass(frozen=True)
class SandboxSettings:
    """Settings of ``dsbroker sandbox serve`` (the owner side)."""

    listen: str = setting("127.0.0.1:50061", "address to serve gRPC on")
    plaintext: bool = setting(False, TRANSPORT_HELP["plaintext"])
    tls_cert: str = setting("", TRANSPORT_HELP["tls_cert"])
    tls_key: str = setting("", TRANSPORT_HELP["tls_key"])
    tls_client_ca: str = setting("", "PEM CA whose client certificates may call the sandbox (the broker's); "
                                     "required with TLS")
    reflection: bool = setting(False, "serve gRPC reflection (for grpcurl in development)")
    trust: str = setting("", "the owner's trust file: keys whose signatures on a policy the sandbox accepts, "
                             "and the roles every policy needs (required)")
    owner_timezone: str = setting("Asia/Shanghai", "time zone of the owner's day, for policies' validity dates")
    jwks: str = setting("", JWT_HELP["jwks"] + "; the sandbox verifies the caller's token each plan carries")
    jwt_issuer: str = setting("", JWT_HELP["jwt_issuer"])
    jwt_audience: str = setting("dsbroker", JWT_HELP["jwt_audience"])
    jwt_algorithms: tuple[str, ...] = setting(ALLOWED_ALGORITHMS, JWT_HELP["jwt_algorithms"])
    jwt_leeway_seconds: float = setting(30.0, JWT_HELP["jwt_leeway_seconds"])
    token_binding: str = setting("none", "hold each plan's token to the requester's certificate the broker "
                                         "forwards: 'none', 'subject' (sub equals its CN) or 'thumbprint' (cnf "
                                         "x5t#S256 required); a token that carries cnf is always held to it")
    requester_ca: str = setting("", "PEM CA(s) of requesters' client certificates (the platform CA): a plan's "
                                    "forwarded certificate must be a valid client certificate under them; needed "
                                    "for encrypted queries with tokens that are not certificate-bound")
    policy_ledger: str = setting("", "SQLite file where the sandbox keeps the owner's revocations and the newest "
                                     "version of each policy it has seen; empty: <state_dir>/policies.sqlite, "
                                     "or beside the data file, <data>.policies.sqlite")
    statements: str = setting("", "a directory of the owner's own: revocation files (*.json, one statement a "
                                  "line) and signed policy documents (*.yaml), read at start and when they change")
    engine: str = setting("duckdb", "the engine the data is in: 'duckdb' (a data file, data), 'postgres' (the "
                                    "owner's PostgreSQL database, postgres_dsn, through a read-only role whose "
                                    "lockdown is verified at start; the sandbox refuses to start otherwise) or "
                                    "'spark' (Parquet tables, spark_tables, read by a locked-down Spark session "
                                    "on spark_master or a Spark Connect server, spark_remote)")
    data: str = setting("", "path of the DuckDB data file, opened read-only (engine = duckdb)")
    postgres_dsn: str = setting("", "libpq connection string or postgresql:// URI of the owner's database, as the "
                                    "sandbox's read-only role (engine = postgres); keep a password out of it "
                                    "(PGPASSFILE or ~/.pgpass): it is never logged, but a config file is read by "
                                    "whoever can read it")
    spark_master: str = setting("", "the Spark master the sandbox's own session runs on (engine = spark): "
                                    "local[N] on this machine, or a cluster's (spark://host:7077, yarn, "
                                    "k8s://...), whose executors read the tables; empty: local[2] (unless "
                                    "spark_remote is set)")
    spark_remote: str = setting("", "a Spark Connect server to run on instead of a session of the sandbox's own "
                                    "(engine = spark): sc://host:port, with ;use_ssl=true;token=... for TLS and "
                                    "its token; the server's settings are verified at start (the sandbox "
                                    "refuses to start unless they are locked down); not with spark_master")
    spark_tables: tuple[tuple[str, str], ...] = setting(
        (), "each served table's Parquet file or directory (a TOML table: schema.table = path; engine = spark): "
            "the sandbox registers these and no other table, every one of them a dataset")
    state_dir: str = setting("", "directory of the sandbox's ledgers whose own settings are empty "
                                 "(<dir>/policies.sqlite, privacy.sqlite, released.sqlite, executions.sqlite); "
                                 "empty: beside the DuckDB data file; required with engine = postgres or spark")
    datasets: tuple[str, ...] = setting((), "tables served and listed, as schema.table (required: the sandbox "
                                            "serves no table it is not told to); on PostgreSQL the role may read "
                                            "these and no other table")
    catalog: str = setting("", "the owner's catalog YAML describing the datasets (metadata only); empty uses "
                               "<data name>.catalog.yaml beside the DuckDB data file when it exists (none "
                               "with engine = postgres; 'dsbroker catalog draft' writes one to fill in)")
    privacy_ledger: str = setting("", "SQLite file where the sandbox keeps what noise policies spent and their "
                                     "answers; empty: <state_dir>/privacy.sqlite, or beside the data file, "
                                     "<data>.privacy.sqlite")
    noise_budgets: tuple[tuple[str, float], ...] = setting(
        (), "each dataset's whole privacy budget (a TOML table: schema.table = epsilon), which all its noise grants "
            "spend together, each at most its own budget (its share); a dataset without one has the asking grant's "
            "own budget as its whole, so its grants together never spend more than the largest of them")
    audit_released_cells: bool = setting(True, "check every exact answer against the cells released before in "
                                               "its dataset and withhold what would give a taxpayer away (the "
                                               "released-cell auditor); off releases cells that differencing "
                                               "across queries can combine")
    one_body_per_version: bool = setting(True, "refuse every plan under a policy version of which the owner has "
                                               "signed two different bodies (POLICY_VERSION_REUSED); off serves "
                                               "each owner-signed body of a version, for a test rig that serves "
                                               "variants of one grant only")
    released_cells: str = setting("", "SQLite file where the sandbox keeps every exact cell it has released, for the "
                                      "released-cell auditor; empty: <state_dir>/released.sqlite, or beside the "
                                      "data file, <data>.released.sqlite")
    execution_ledger: str = setting("", "SQLite file where the sandbox records every plan before running it, for "
                                        "auditors to reconcile with the broker's log; empty: "
                                        "<state_dir>/executions.sqlite, or beside the data file, "
                                        "<data>.executions.sqlite")
    sandbox_id: str = setting("", "this sandbox's name in the execution ledger and the broker's log; empty: "
                                  "<host name>:<data file name>, or <host name>:<database name> on "
                                  "PostgreSQL")
    broker_log_keys: tuple[str, ...] = setting((), "the broker's access-log public keys (PEM, access-log.pub; one "
                                                   "per broker writing the log) whose checkpoints this sandbox "
                                                   "witnesses in its execution ledger; empty: it witnesses none")
    witness_key: str = setting("", "Ed25519 private key (PEM) with which the sandbox countersigns the checkpoints it "
                                   "witnesses; created (mode 0600) on first start with its public half (.pub) "
                                   "beside it; empty: beside the execution ledger, <ledger>.witness.key")
    memory_limit: str = setting("2GB", "DuckDB memory limit, and Spark's driver and executor memory (on "
                                         "PostgreSQL the lockdown bounds work_mem and the role's temp_file_limit "
                                         "instead)")
    threads: int = setting(2, "DuckDB worker threads, and Spark's shuffle partitions on a local master (not "
                              "used on PostgreSQL)")
    pool_size: int = setting(4, "pooled engine connections (concurrent queries)")
    max_execution_seconds: float = setting(120.0, "hard ceiling on one query's run time, whatever the deadline")
    max_rows: int = setting(10_000, "most rows one plan may return")
    max_message_bytes: int = setting(64 * MiB, "largest gRPC message sent or received")
    max_workers: int = setting(8, "gRPC worker threads")
    max_concurrent_rpcs: int = setting(32, "calls in flight before new ones get RESOURCE_EXHAUSTED")
    grace_seconds: float = setting(5.0, "time running calls get to finish on SIGTERM")
    metrics_listen: str = setting("", OPERATIONS_HELP["metrics_listen"])
    health_listen: str = setting("", OPERATIONS_HELP["health_listen"])
    request_log: bool = setting(True, OPERATIONS_HELP["request_log"])
