"""The node directory: its layout, state database, install transaction, rollback,
migrations, health checks, sandbox, configuration and update policy.

Names load lazily (PEP 562): importing the package costs nothing until a name
is used, so a command imports only the modules it needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module of this package that provides it
_EXPORTS: dict[str, str] = {
    "ACTIONS": "policy",
    "Action": "policy",
    "Anomaly": "sandbox",
    "AutomaticUpdatePolicy": "policy",
    "CHECKPOINTS": "journal",
    "CONFIG_FILE": "config",
    "CRASH_ENV": "store",
    "CheckResult": "commands",
    "Commands": "config",
    "ConfigResult": "migrations",
    "CrashLoopGuard": "health",
    "CriticalUpdatePolicy": "policy",
    "DAY_NAMES": "policy",
    "DEFAULT_MEMORY_LIMIT": "sandbox",
    "DEFAULT_RESERVE": "store",
    "Decision": "policy",
    "DefaultInstallHooks": "hooks",
    "DeferralLimitError": "policy",
    "HealthMetrics": "health",
    "HealthReportResult": "health",
    "IDENTITY_CODEC": "staging",
    "InstallHooks": "hooks",
    "InstallResult": "install",
    "IsolationStatus": "sandbox",
    "KEEP_VERSIONS": "blobs",
    "MODES": "policy",
    "ManualUpdatePolicy": "policy",
    "MetricBaseline": "regression",
    "MetricRegression": "regression",
    "NetworkSettings": "config",
    "NodeAttributes": "config",
    "NodeConfig": "config",
    "NodeLayout": "layout",
    "NodeStore": "store",
    "OUTPUT_LIMIT": "commands",
    "PLUGIN_TABLES": "config",
    "PerformanceComparison": "health",
    "PluginSettings": "config",
    "PolicyState": "policy",
    "Regression": "health",
    "RegressionSettings": "config",
    "RegressionWatch": "watch",
    "ReleaseLike": "policy",
    "ReleaseStager": "staging",
    "RollbackDecision": "health",
    "RollbackHost": "rollback",
    "RollbackManager": "rollback",
    "RollbackPoint": "rollback",
    "RollbackResult": "rollback",
    "STATE_SCHEMA_VERSION": "state",
    "Sandbox": "sandbox",
    "SchemaMigrator": "migrations",
    "SignedManifest": "truststore",
    "StagedRelease": "staging",
    "StateBackup": "rollback",
    "StateDB": "state",
    "TestResult": "sandbox",
    "TimeWindow": "policy",
    "TrustStore": "truststore",
    "UpdateHealthMonitor": "health",
    "UpdatePolicy": "policy",
    "UpdateSandbox": "sandbox",
    "ValidationResult": "sandbox",
    "WatchResult": "health",
    "WebhookSettings": "config",
    "apply_config_changes": "migrations",
    "backup_data_dir": "rollback",
    "blob_digests": "blobs",
    "check_tree": "tree",
    "check_tree_shape": "tree",
    "checkpoint": "store",
    "config_sidecars": "migrations",
    "decide": "policy",
    "default_arch": "store",
    "default_config_text": "config",
    "dumps_toml": "config",
    "find_regressions": "regression",
    "installed_blobs": "blobs",
    "is_sqlite_file": "rollback",
    "keep_blob": "blobs",
    "kept_blobs": "blobs",
    "load_config": "config",
    "median_sample": "regression",
    "parse_metrics": "regression",
    "place_archive": "tree",
    "place_file": "tree",
    "prune_blobs": "blobs",
    "read_config": "migrations",
    "read_config_document": "config",
    "read_node_attributes": "config",
    "recover_data_dir": "rollback",
    "require_healthy": "health",
    "restart_service": "commands",
    "restore_data_dir": "rollback",
    "revert_config_changes": "migrations",
    "run_command_check": "commands",
    "run_health_checks": "health",
    "run_metrics_command": "regression",
    "run_restart_command": "commands",
    "run_sandbox_test": "sandbox",
    "schema_version_of": "migrations",
    "select_update": "policy",
    "write_config": "config",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static names for type checkers
    from .blobs import (
        KEEP_VERSIONS as KEEP_VERSIONS,
        blob_digests as blob_digests,
        installed_blobs as installed_blobs,
        keep_blob as keep_blob,
        kept_blobs as kept_blobs,
        prune_blobs as prune_blobs,
    )
    from .commands import (
        OUTPUT_LIMIT as OUTPUT_LIMIT,
        CheckResult as CheckResult,
        restart_service as restart_service,
        run_command_check as run_command_check,
        run_restart_command as run_restart_command,
    )
    from .config import (
        CONFIG_FILE as CONFIG_FILE,
        PLUGIN_TABLES as PLUGIN_TABLES,
        Commands as Commands,
        NetworkSettings as NetworkSettings,
        NodeAttributes as NodeAttributes,
        NodeConfig as NodeConfig,
        PluginSettings as PluginSettings,
        RegressionSettings as RegressionSettings,
        WebhookSettings as WebhookSettings,
        default_config_text as default_config_text,
        dumps_toml as dumps_toml,
        load_config as load_config,
        read_config_document as read_config_document,
        read_node_attributes as read_node_attributes,
        write_config as write_config,
    )
    from .health import (
        CrashLoopGuard as CrashLoopGuard,
        HealthMetrics as HealthMetrics,
        HealthReportResult as HealthReportResult,
        PerformanceComparison as PerformanceComparison,
        Regression as Regression,
        RollbackDecision as RollbackDecision,
        UpdateHealthMonitor as UpdateHealthMonitor,
        WatchResult as WatchResult,
        require_healthy as require_healthy,
        run_health_checks as run_health_checks,
    )
    from .hooks import (
        DefaultInstallHooks as DefaultInstallHooks,
        InstallHooks as InstallHooks,
    )
    from .install import (
        InstallResult as InstallResult,
    )
    from .journal import (
        CHECKPOINTS as CHECKPOINTS,
    )
    from .layout import (
        NodeLayout as NodeLayout,
    )
    from .migrations import (
        ConfigResult as ConfigResult,
        SchemaMigrator as SchemaMigrator,
        apply_config_changes as apply_config_changes,
        config_sidecars as config_sidecars,
        read_config as read_config,
        revert_config_changes as revert_config_changes,
        schema_version_of as schema_version_of,
    )
    from .policy import (
        ACTIONS as ACTIONS,
        DAY_NAMES as DAY_NAMES,
        MODES as MODES,
        Action as Action,
        AutomaticUpdatePolicy as AutomaticUpdatePolicy,
        CriticalUpdatePolicy as CriticalUpdatePolicy,
        Decision as Decision,
        DeferralLimitError as DeferralLimitError,
        ManualUpdatePolicy as ManualUpdatePolicy,
        PolicyState as PolicyState,
        ReleaseLike as ReleaseLike,
        TimeWindow as TimeWindow,
        UpdatePolicy as UpdatePolicy,
        decide as decide,
        select_update as select_update,
    )
    from .regression import (
        MetricBaseline as MetricBaseline,
        MetricRegression as MetricRegression,
        find_regressions as find_regressions,
        median_sample as median_sample,
        parse_metrics as parse_metrics,
        run_metrics_command as run_metrics_command,
    )
    from .rollback import (
        RollbackHost as RollbackHost,
        RollbackManager as RollbackManager,
        RollbackPoint as RollbackPoint,
        RollbackResult as RollbackResult,
        StateBackup as StateBackup,
        backup_data_dir as backup_data_dir,
        is_sqlite_file as is_sqlite_file,
        recover_data_dir as recover_data_dir,
        restore_data_dir as restore_data_dir,
    )
    from .sandbox import (
        DEFAULT_MEMORY_LIMIT as DEFAULT_MEMORY_LIMIT,
        Anomaly as Anomaly,
        IsolationStatus as IsolationStatus,
        Sandbox as Sandbox,
        TestResult as TestResult,
        UpdateSandbox as UpdateSandbox,
        ValidationResult as ValidationResult,
        run_sandbox_test as run_sandbox_test,
    )
    from .staging import (
        IDENTITY_CODEC as IDENTITY_CODEC,
        ReleaseStager as ReleaseStager,
        StagedRelease as StagedRelease,
    )
    from .state import (
        STATE_SCHEMA_VERSION as STATE_SCHEMA_VERSION,
        StateDB as StateDB,
    )
    from .store import (
        CRASH_ENV as CRASH_ENV,
        DEFAULT_RESERVE as DEFAULT_RESERVE,
        NodeStore as NodeStore,
        checkpoint as checkpoint,
        default_arch as default_arch,
    )
    from .tree import (
        check_tree as check_tree,
        check_tree_shape as check_tree_shape,
        place_archive as place_archive,
        place_file as place_file,
    )
    from .truststore import (
        SignedManifest as SignedManifest,
        TrustStore as TrustStore,
    )
    from .watch import (
        RegressionWatch as RegressionWatch,
    )
