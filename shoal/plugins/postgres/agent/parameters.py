"""Which PostgreSQL 15 parameters a declaration may set (`spec.postgres.parameters`).

An allowlist, not a blocklist: a parameter is accepted only when it is listed below under
what it tunes (memory, planner, logging, ...). Everything else is refused, and the ones a
user is likely to try are refused with the reason: they run shell commands, load code,
write files at a path, weaken what `durability` promises, or are set by shoal itself
(docs/security.md, "Parameters by allowlist"). The same module decides in the operator (the
declaration is refused with exit 2, nothing changes) and in the member agent (a request that
got past the operator is refused with HTTP 400), so the rule is written once; so is how a
value becomes PostgreSQL's text (`setting_text`).

Standard library only: the agent runs it inside the member image.
"""

from __future__ import annotations

ALLOWED: dict[str, tuple[str, ...]] = {
    "memory": (
        "shared_buffers", "work_mem", "maintenance_work_mem", "autovacuum_work_mem",
        "temp_buffers", "effective_cache_size", "logical_decoding_work_mem",
        "hash_mem_multiplier", "temp_file_limit", "max_stack_depth",
    ),
    "connections": (
        "max_connections", "superuser_reserved_connections", "authentication_timeout",
        "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
        "tcp_user_timeout", "client_connection_check_interval",
    ),
    "session defaults": (
        "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
        "idle_session_timeout", "deadlock_timeout", "default_transaction_isolation",
        "timezone", "datestyle", "intervalstyle", "extra_float_digits", "bytea_output",
        "client_min_messages", "default_text_search_config", "xmlbinary", "xmloption",
        "default_toast_compression", "gin_pending_list_limit", "gin_fuzzy_search_limit",
    ),
    "locks": (
        "max_locks_per_transaction", "max_pred_locks_per_transaction",
        "max_pred_locks_per_relation", "max_pred_locks_per_page", "max_prepared_transactions",
    ),
    "planner": (
        "random_page_cost", "seq_page_cost", "cpu_tuple_cost", "cpu_index_tuple_cost",
        "cpu_operator_cost", "parallel_setup_cost", "parallel_tuple_cost",
        "effective_io_concurrency", "maintenance_io_concurrency", "default_statistics_target",
        "constraint_exclusion", "cursor_tuple_fraction", "from_collapse_limit",
        "join_collapse_limit", "plan_cache_mode", "jit", "jit_above_cost",
        "jit_inline_above_cost", "jit_optimize_above_cost", "geqo", "geqo_threshold",
        "geqo_effort", "enable_async_append", "enable_bitmapscan", "enable_gathermerge",
        "enable_hashagg", "enable_hashjoin", "enable_incremental_sort", "enable_indexscan",
        "enable_indexonlyscan", "enable_material", "enable_memoize", "enable_mergejoin",
        "enable_nestloop", "enable_parallel_append", "enable_parallel_hash",
        "enable_partition_pruning", "enable_partitionwise_join",
        "enable_partitionwise_aggregate", "enable_seqscan", "enable_sort", "enable_tidscan",
    ),
    "parallelism": (
        "max_worker_processes", "max_parallel_workers", "max_parallel_workers_per_gather",
        "max_parallel_maintenance_workers", "min_parallel_table_scan_size",
        "min_parallel_index_scan_size", "parallel_leader_participation",
    ),
    "WAL and checkpoints": (
        "checkpoint_timeout", "checkpoint_completion_target", "checkpoint_warning",
        "max_wal_size", "min_wal_size", "wal_buffers", "wal_compression", "wal_writer_delay",
        "wal_writer_flush_after", "wal_keep_size", "commit_delay", "commit_siblings",
        "checkpoint_flush_after", "backend_flush_after", "bgwriter_delay",
        "bgwriter_lru_maxpages", "bgwriter_lru_multiplier", "bgwriter_flush_after",
        "max_slot_wal_keep_size",
    ),
    "standbys": ("max_standby_streaming_delay", "max_standby_archive_delay"),
    "logging": (
        "log_min_duration_statement", "log_min_duration_sample", "log_statement_sample_rate",
        "log_transaction_sample_rate", "log_min_messages", "log_min_error_statement",
        "log_statement", "log_duration", "log_checkpoints", "log_connections",
        "log_disconnections", "log_lock_waits", "log_temp_files",
        "log_autovacuum_min_duration", "log_error_verbosity", "log_timezone",
        "log_parameter_max_length", "log_parameter_max_length_on_error",
        "log_recovery_conflict_waits", "log_startup_progress_interval",
        "log_replication_commands", "application_name",
    ),
    "statistics": (
        "track_activities", "track_counts", "track_io_timing", "track_wal_io_timing",
        "track_functions", "track_activity_query_size", "compute_query_id",
    ),
    "autovacuum and vacuum": (
        "autovacuum", "autovacuum_max_workers", "autovacuum_naptime",
        "autovacuum_vacuum_threshold", "autovacuum_vacuum_insert_threshold",
        "autovacuum_analyze_threshold", "autovacuum_vacuum_scale_factor",
        "autovacuum_vacuum_insert_scale_factor", "autovacuum_analyze_scale_factor",
        "autovacuum_freeze_max_age", "autovacuum_multixact_freeze_max_age",
        "autovacuum_vacuum_cost_delay", "autovacuum_vacuum_cost_limit", "vacuum_cost_delay",
        "vacuum_cost_limit", "vacuum_cost_page_hit", "vacuum_cost_page_miss",
        "vacuum_cost_page_dirty", "vacuum_freeze_min_age", "vacuum_freeze_table_age",
        "vacuum_multixact_freeze_min_age", "vacuum_multixact_freeze_table_age",
        "vacuum_failsafe_age", "vacuum_multixact_failsafe_age",
    ),
}  # fmt: skip

_RUNS_COMMANDS = "runs a shell command on every member"
_LOADS_CODE = "loads code into every member's server"
_WEAKENS = "would weaken what `durability` promises (acknowledged writes could be lost)"
_PATHS = "names files inside the member container"
_MANAGED = "is set by shoal itself (replication, failover and connections depend on it)"

REFUSED: dict[str, str] = {
    **dict.fromkeys(
        ("archive_command", "archive_cleanup_command", "restore_command",
         "recovery_end_command", "ssl_passphrase_command"),
        _RUNS_COMMANDS,
    ),
    **dict.fromkeys(
        ("shared_preload_libraries", "local_preload_libraries", "session_preload_libraries",
         "dynamic_library_path", "jit_provider", "archive_library"),
        _LOADS_CODE,
    ),
    **dict.fromkeys(
        ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method",
         "data_sync_retry", "zero_damaged_pages", "ignore_checksum_failure",
         "ignore_invalid_pages", "ignore_system_indexes", "allow_system_table_mods",
         "wal_level", "synchronous_standby_names", "default_transaction_read_only"),
        _WEAKENS,
    ),
    **dict.fromkeys(
        ("data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
         "unix_socket_directories", "unix_socket_group", "unix_socket_permissions",
         "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir",
         "logging_collector", "log_directory", "log_filename", "log_destination",
         "krb_server_keyfile", "promote_trigger_file"),
        _PATHS,
    ),
    **dict.fromkeys(
        ("primary_conninfo", "primary_slot_name", "listen_addresses", "port", "hot_standby",
         "hot_standby_feedback", "max_wal_senders", "max_replication_slots", "archive_mode",
         "recovery_target", "recovery_target_lsn", "recovery_target_name",
         "recovery_target_time", "recovery_target_xid", "recovery_target_action",
         "recovery_target_inclusive", "recovery_target_timeline", "password_encryption",
         "ssl", "wal_log_hints", "wal_receiver_timeout", "wal_sender_timeout",
         "wal_retrieve_retry_interval", "wal_receiver_status_interval", "cluster_name",
         "standard_conforming_strings", "log_line_prefix"),
        _MANAGED,
    ),
}  # fmt: skip

# Settings that weaken durability and that PostgreSQL lets any role set for its own
# sessions with `ALTER ROLE ... SET` (USERSET): the agent reports role- and database-level
# values of these and resets them (docs/security.md).
ROLE_LEVEL_GUARDED: tuple[str, ...] = ("synchronous_commit", "default_transaction_read_only")

ALLOWED_NAMES: frozenset[str] = frozenset(n for names in ALLOWED.values() for n in names)
assert not ALLOWED_NAMES & REFUSED.keys(), "a parameter is both allowed and refused"


def setting_text(value: object) -> str:
    """A parameter's value as PostgreSQL's configuration text: booleans as on/off, numbers
    and strings as written. The one conversion, for the operator (the declaration's values
    at bootstrap and in every Configure) and the agent (the values a request carries)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"unsupported value type {type(value).__name__}")


def refusal(name: str) -> str | None:
    """Why `name` may not be set from a declaration, or None when it may."""
    if name in ALLOWED_NAMES:
        return None
    if name in REFUSED:
        return REFUSED[name]
    return (
        "is not a parameter a declaration may set (only ones known to be safe are; "
        "docs/security.md lists them)"
    )
