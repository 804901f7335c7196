//! The SQL that hardens the template database and the runner role.
//!
//! Privileges revoked from PUBLIC here live in the template's own catalogs,
//! so every database cloned from it inherits them. Role settings live with
//! the role and apply in every database.

use super::quote_ident;

/// Functions in `pg_catalog` whose EXECUTE privilege PUBLIC loses.
pub const REVOKED_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_notify",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_current_logfile",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_export_snapshot",
    "pg_log_backend_memory_contexts",
    "pg_show_all_settings",
    "pg_show_all_file_settings",
    "pg_hba_file_rules",
    "pg_lock_status",
    "pg_prepared_xact",
    "pg_get_backend_memory_contexts",
    "pg_get_shmem_allocations",
    "pg_database_size",
    "pg_tablespace_size",
    "pg_tablespace_location",
    "pg_logical_emit_message",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "loread",
    "lowrite",
    "txid_current",
    "pg_current_xact_id",
    "pg_prepared_statement",
    "pg_cursor",
];

/// `LIKE` patterns of further `pg_catalog` functions PUBLIC loses.
pub const REVOKED_FUNCTION_PATTERNS: &[&str] = &[
    "pg\\_sleep%",
    "pg\\_advisory%",
    "pg\\_try\\_advisory%",
    "lo\\_%",
    "pg\\_ls\\_%",
    "pg\\_stat\\_get\\_%",
    "pg\\_stat\\_reset%",
    "dblink%",
    "pg\\_file\\_%",
];

/// Catalog views and tables PUBLIC may no longer read.
pub const REVOKED_RELATIONS: &[&str] = &[
    "pg_stat_activity",
    "pg_settings",
    "pg_file_settings",
    "pg_roles",
    "pg_user",
    "pg_group",
    "pg_auth_members",
    "pg_db_role_setting",
    "pg_database",
    "pg_tablespace",
    "pg_shdescription",
    "pg_shseclabel",
    "pg_shdepend",
    "pg_stat_database",
    "pg_stat_database_conflicts",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_stat_subscription",
    "pg_stat_ssl",
    "pg_stat_gssapi",
    "pg_replication_slots",
    "pg_stat_archiver",
    "pg_stat_bgwriter",
    "pg_stat_wal",
    "pg_stat_slru",
    "pg_stat_replication_slots",
    "pg_stat_progress_vacuum",
    "pg_stat_progress_analyze",
    "pg_stat_progress_create_index",
    "pg_stat_progress_cluster",
    "pg_stat_progress_basebackup",
    "pg_stat_progress_copy",
    "pg_user_mappings",
    "pg_backend_memory_contexts",
    "pg_shmem_allocations",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_config",
    "pg_stat_statements",
    "pg_prepared_statements",
    "pg_cursors",
];

/// Returns `'text'` as a SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Returns the script that hardens the template database, run there by
/// the admin. The owners' group keeps `set_config` and the SQL languages,
/// which professors' init scripts may use.
pub fn template_script(owners_group: &str) -> String {
    let names: Vec<String> = REVOKED_FUNCTIONS.iter().map(|name| literal(name)).collect();
    let patterns: Vec<String> = REVOKED_FUNCTION_PATTERNS
        .iter()
        .map(|p| literal(p))
        .collect();
    let relations: Vec<String> = REVOKED_RELATIONS.iter().map(|name| literal(name)).collect();
    let owner = quote_ident(owners_group);
    format!(
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;
         REVOKE ALL ON LANGUAGE plpgsql FROM PUBLIC;
         REVOKE ALL ON LANGUAGE sql FROM PUBLIC;
         GRANT USAGE ON LANGUAGE plpgsql, sql TO {owner};
         DO $harden$
         DECLARE item record;
         BEGIN
           FOR item IN
             SELECT p.oid::regprocedure AS signature
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname IN ('pg_catalog', 'public')
               AND (p.proname = ANY (ARRAY[{names}]) OR p.proname LIKE ANY (ARRAY[{patterns}]))
           LOOP
             EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', item.signature);
           END LOOP;
           FOR item IN
             SELECT c.oid::regclass AS relation
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'pg_catalog' AND c.relname = ANY (ARRAY[{relations}])
           LOOP
             EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', item.relation);
           END LOOP;
         END
         $harden$;
         GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO {owner};",
        names = names.join(", "),
        patterns = patterns.join(", "),
        relations = relations.join(", "),
    )
}

/// Settings of the runner role, applied with `ALTER ROLE ... SET`.
pub fn runner_settings(statement_timeout_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("statement_timeout", format!("{statement_timeout_ms}ms")),
        ("lock_timeout", "1000ms".into()),
        ("idle_in_transaction_session_timeout", "30s".into()),
        ("idle_session_timeout", "10min".into()),
        ("temp_file_limit", "256MB".into()),
        ("work_mem", "16MB".into()),
        ("hash_mem_multiplier", "1".into()),
        ("default_transaction_read_only", "on".into()),
        ("jit", "off".into()),
        ("max_parallel_workers_per_gather", "0".into()),
    ]
}

/// The attributes of a role that matter to the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleAttributes {
    pub superuser: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    /// Number of roles this role is a member of.
    pub memberships: i64,
}

/// Checks that a role that runs hostile SQL (the runner for students, the
/// owners' group that every init SQL's owner belongs to) is harmless.
///
/// # Errors
///
/// Returns a message naming every dangerous attribute.
pub fn check_role_attributes(
    kind: &str,
    role: &str,
    attributes: &RoleAttributes,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if attributes.superuser {
        problems.push("is a superuser");
    }
    if attributes.create_role {
        problems.push("can create roles");
    }
    if attributes.create_db {
        problems.push("can create databases");
    }
    if attributes.replication {
        problems.push("has the replication attribute");
    }
    if attributes.bypass_rls {
        problems.push("bypasses row-level security");
    }
    if attributes.memberships > 0 {
        problems.push("is a member of other roles (it could SET ROLE to them)");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "refusing to run: the {kind} role {role:?} {}; fix the role or choose another --prefix",
            problems.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_runner_passes_the_check() {
        assert!(check_role_attributes("runner", "r", &RoleAttributes::default()).is_ok());
    }

    #[test]
    fn a_superuser_runner_is_refused() {
        let attributes = RoleAttributes {
            superuser: true,
            ..RoleAttributes::default()
        };
        let message = check_role_attributes("runner", "sqlarena_runner", &attributes).unwrap_err();
        assert!(
            message.contains("refusing to run") && message.contains("is a superuser"),
            "{message}"
        );
        assert!(message.contains("sqlarena_runner"));
    }

    #[test]
    fn every_dangerous_attribute_is_named() {
        let attributes = RoleAttributes {
            superuser: false,
            create_role: true,
            create_db: true,
            replication: true,
            bypass_rls: true,
            memberships: 1,
        };
        let message = check_role_attributes("runner", "r", &attributes).unwrap_err();
        for part in [
            "create roles",
            "create databases",
            "replication",
            "row-level",
            "member",
        ] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }
}
