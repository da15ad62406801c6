//! `purrify-gateway admin …`: account administration against the configured database, for
//! the first admin of a deployment (`kubectl exec … -- purrify-gateway admin create-user`).

use std::io::BufRead;

use purrify_store::Db;

use crate::config::{AdminCommand, Command, Config, RoleArg};
use crate::domain::accounts::{Registration, Role};

pub async fn run(config: &Config, command: &Command, password_input: &mut dyn BufRead) -> anyhow::Result<String> {
    let Command::Admin(AdminCommand::CreateUser { email, username, role }) = command;
    let mut password = String::new();
    password_input.read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let url = config.database_url();
    std::fs::create_dir_all(&config.data_dir).ok();
    let db = Db::connect(&url).await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    let service = super::accounts::start(config, db.clone()).await?;
    let role = match role {
        RoleArg::Admin => Role::Admin,
        RoleArg::User => Role::User,
    };
    let r = Registration { email: Some(email.clone()), username: username.clone(), password: Some(password), full_name: None };
    let account = service.create_account(r, role).await.map_err(|e| match e {
        crate::domain::DomainError::Fields(f) => {
            anyhow::anyhow!("{}", f.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("; "))
        }
        e => anyhow::anyhow!("{e}"),
    })?;
    db.close().await;
    Ok(format!("created {} {} ({})", account.role.as_str(), account.email.unwrap_or_default(), account.id))
}
