//! `opsledger admin …`: everything a new installation needs before its first
//! API call — a workspace, users, memberships (optionally restricted to some
//! tenants) and bearer tokens — so a PostgreSQL database can start from
//! nothing. Every refusal is a sentence naming the problem.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use opsledger_core::access::Role;
use opsledger_store::Store;
use opsledger_store::directory::{Tenant, User, Workspace};
use rand::RngCore;
use std::io::Read;
use std::time::Duration;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Creates a workspace and prints its id.
    CreateWorkspace {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long)]
        name: String,
    },
    /// Creates a user. The password is read from stdin with
    /// --password-stdin; otherwise one is generated and printed once.
    /// Only its argon2 hash is stored.
    CreateUser {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Makes a user a member of a workspace (or changes the role). Each
    /// --tenant (id or name in that workspace) restricts the member to those
    /// tenants, replacing an earlier restriction; --all-tenants lifts it.
    /// With neither, a new member sees every tenant and an existing member
    /// keeps their restriction (changing a role never widens access).
    AddMember {
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long, env = "OPSLEDGER_WORKSPACE")]
        workspace: String,
        #[arg(long)]
        email: String,
        /// viewer, operator or admin
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long = "tenant", value_name = "TENANT", conflicts_with = "all_tenants")]
        tenants: Vec<String>,
        /// Lift an existing tenant restriction.
        #[arg(long)]
        all_tenants: bool,
    },
    /// Issues a bearer token for a member of the workspace and prints it
    /// once; only its hash is stored.
    CreateToken {
        #[arg(long, env = "OPSLEDGER_WORKSPACE")]
        workspace: String,
        #[arg(long, env = "OPSLEDGER_DB")]
        db: String,
        #[arg(long)]
        email: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
        /// e.g. 30d, 12h, 90m, 1h30m (units: w, d, h, m, s); default: never expires
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
}

pub async fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::CreateWorkspace { db, name } => {
            let name = name.trim();
            if name.is_empty() {
                bail!("a workspace needs a name (--name)");
            }
            let store = crate::open(&db).await?;
            let ws = store.create_workspace(name).await?;
            eprintln!("created workspace `{}`", ws.name);
            println!("{}", ws.id);
        }
        AdminCommand::CreateUser {
            db,
            email,
            password_stdin,
        } => {
            let email = checked_email(&email)?;
            let (password, generated) = if password_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the password from stdin")?;
                let p = s.trim_end_matches(['\n', '\r']).to_owned();
                if p.is_empty() {
                    bail!("--password-stdin was given but stdin held no password");
                }
                (p, false)
            } else {
                let mut bytes = [0u8; 16];
                rand::rng().fill_bytes(&mut bytes);
                (hex::encode(bytes), true)
            };
            let store = crate::open(&db).await?;
            let hash = crate::demo::hash_password(&password)?;
            let user = store.create_user(email, &hash).await?;
            if generated {
                eprintln!(
                    "created user {} (id {}); its password follows, shown this once",
                    user.email, user.id
                );
                println!("{password}");
            } else {
                eprintln!("created user {} (id {})", user.email, user.id);
            }
        }
        AdminCommand::AddMember {
            db,
            workspace,
            email,
            role,
            tenants,
            all_tenants,
        } => {
            let store = crate::open(&db).await?;
            let ws = workspace_named(&store, &workspace).await?;
            let user = user_named(&store, &email).await?;
            let known = store.list_tenants(&ws.id).await?;
            let mut ids = tenants
                .iter()
                .map(|t| tenant_named(&known, &ws, t).map(|t| t.id.clone()))
                .collect::<Result<Vec<_>>>()?;
            if ids.is_empty() && !all_tenants {
                // A role change keeps the member's restriction.
                if let Some(existing) = store.membership(&ws.id, &user.id).await? {
                    ids = existing.tenants.unwrap_or_default();
                }
            }
            let m = store.add_member(&ws.id, &user.id, role, &ids).await?;
            let scope = match &m.tenants {
                None => "all tenants".to_owned(),
                Some(ids) => {
                    let names: Vec<&str> = ids
                        .iter()
                        .map(|id| {
                            known
                                .iter()
                                .find(|t| &t.id == id)
                                .map_or(id.as_str(), |t| t.name.as_str())
                        })
                        .collect();
                    format!("only tenants {}", names.join(", "))
                }
            };
            println!(
                "{} is {} of workspace `{}` ({scope})",
                user.email,
                m.role.as_str(),
                ws.name
            );
        }
        AdminCommand::CreateToken {
            db,
            workspace,
            email,
            name,
            expires_in,
        } => {
            let store = crate::open(&db).await?;
            let ws = workspace_named(&store, &workspace).await?;
            let user = user_named(&store, &email).await?;
            if store.membership(&ws.id, &user.id).await?.is_none() {
                bail!(
                    "user {} is not a member of workspace `{}` (add them with `opsledger admin add-member`)",
                    user.email,
                    ws.id
                );
            }
            let expires_at = match expires_in {
                None => None,
                Some(d) => {
                    let ms = i64::try_from(d.as_millis()).ok();
                    Some(
                        ms.and_then(|ms| opsledger_store::now_ms().checked_add(ms))
                            .context("--expires-in is too long")?,
                    )
                }
            };
            let token = store
                .issue_workspace_token(&user.id, &name, &ws.id, expires_at)
                .await?;
            let until = match expires_at.and_then(chrono::DateTime::from_timestamp_millis) {
                Some(t) => format!("expires {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                None => "never expires".to_owned(),
            };
            eprintln!(
                "token `{name}` for {}, valid in workspace `{}` only ({until}); shown this once:",
                user.email, ws.name
            );
            println!("{token}");
        }
    }
    Ok(())
}

/// The workspace with this id, or an error saying there is none.
pub(crate) async fn workspace_named(store: &Store, id: &str) -> Result<Workspace> {
    store
        .get_workspace(id)
        .await?
        .with_context(|| format!("workspace `{id}` not found"))
}

async fn user_named(store: &Store, email: &str) -> Result<User> {
    store.find_user_by_email(email.trim()).await?.with_context(|| {
        format!("no user with email `{email}` (create one with `opsledger admin create-user`)")
    })
}

/// A tenant of `ws` given by id or name.
fn tenant_named<'a>(known: &'a [Tenant], ws: &Workspace, given: &str) -> Result<&'a Tenant> {
    known
        .iter()
        .find(|t| t.id == given)
        .or_else(|| known.iter().find(|t| t.name == given))
        .with_context(|| {
            format!(
                "workspace `{}` has no tenant `{given}` (give a tenant id or name of that workspace)",
                ws.id
            )
        })
}

fn checked_email(email: &str) -> Result<&str> {
    let email = email.trim();
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(email),
        _ => bail!("`{email}` is not an email address"),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role `{s}` (use viewer, operator or admin)"))
}

/// `30d`, `12h`, `90m`, `45s`, `2w`, or several run together (`1h30m`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (e.g. 30d, 12h, 90m, 1h30m)");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "30", "d", "0d", "1y", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
