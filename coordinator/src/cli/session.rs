//! `login`, `register` and `logout`: getting a token, keeping it, revoking it.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::{json, Value};

use super::credentials::{self, Credentials};
use super::output::{outln, print_json, text};
use super::{CliError, Client, LoginArgs, Outcome, RegisterArgs};

/// Reads one line from standard input after printing `prompt` to standard
/// error; without echo when `secret` and standard input is a terminal.
fn ask(prompt: &str, secret: bool) -> Result<String, CliError> {
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
    }
    let hide = secret && terminal;
    if hide {
        set_echo(false);
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hide {
        set_echo(true);
        eprintln!();
    }
    match read {
        Ok(0) => Err(CliError::Usage(format!(
            "{prompt}: nothing on standard input (pass --{} instead)",
            prompt.split_whitespace().next().unwrap_or(prompt)
        ))),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(error) => Err(CliError::Usage(format!("{prompt}: {error}"))),
    }
}

/// Turns terminal echo off or on with `stty` (no unsafe termios calls).
fn set_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

/// Logs in with `email` and `password` at `client` and keeps the token.
async fn sign_in(
    client: &Client,
    email: &str,
    password: &str,
    json: bool,
) -> Result<Outcome, CliError> {
    let user = client
        .post("/login", &json!({"email": email, "password": password}))
        .await?;
    let credentials = Credentials {
        url: client.base().to_string(),
        token: text(&user["token"]),
        user_id: user["id"]
            .as_i64()
            .ok_or_else(|| CliError::Server(format!("the login reply has no user id: {user}")))?,
        email: text(&user["email"]),
        role: text(&user["role"]),
        expires_at: user["expires_at"].as_str().map(str::to_string),
    };
    if credentials.token.is_empty() {
        return Err(CliError::Server("the login reply has no token".into()));
    }
    let path = credentials::save(&credentials)?;
    if json {
        let mut shown = user.clone();
        if let Value::Object(fields) = &mut shown {
            fields.remove("token");
            fields.insert("url".into(), json!(credentials.url));
            fields.insert("credentials".into(), json!(path.display().to_string()));
        }
        print_json(&shown);
    } else {
        outln!(
            "logged in to {} as {} ({}, user {}); token kept in {}",
            credentials.url,
            credentials.email,
            credentials.role,
            credentials.user_id,
            path.display()
        );
    }
    Ok(Outcome::Done)
}

/// `sqlarena login URL`.
pub async fn login(args: LoginArgs, json: bool) -> Result<Outcome, CliError> {
    let client = Client::new(&args.url, None)?;
    let email = match args.email {
        Some(email) => email,
        None => ask("email", false)?,
    };
    let password = match args.password {
        Some(password) => password,
        None => ask("password", true)?,
    };
    sign_in(&client, &email, &password, json).await
}

/// `sqlarena register URL`: creates the account, then logs in.
pub async fn register(args: RegisterArgs, json: bool) -> Result<Outcome, CliError> {
    let client = Client::new(&args.url, None)?;
    let password = match args.password {
        Some(password) => password,
        None => ask("password", true)?,
    };
    let mut body = json!({
        "email": args.email,
        "full_name": args.name,
        "password": password,
    });
    if let Some(role) = &args.role {
        body["role"] = json!(role.to_uppercase());
    }
    if let Some(invite) = &args.invite {
        body["invite"] = json!(invite);
    }
    let user = client.post("/register", &body).await?;
    if !json {
        outln!(
            "registered {} as {} (user {})",
            text(&user["email"]),
            text(&user["role"]),
            user["id"]
        );
    }
    sign_in(&client, &args.email, &password, json).await
}

/// `sqlarena logout`: revokes the token on the server, then forgets it.
/// A server without `POST /logout`, or one that no longer knows the token,
/// still gets it forgotten here.
pub async fn logout(json: bool) -> Result<Outcome, CliError> {
    let (client, credentials) = Client::signed_in()?;
    let revoked = match client.post("/logout", &json!({})).await {
        Ok(_) => Ok(true),
        Err(CliError::NotFound(_) | CliError::Auth(_)) => Ok(false),
        Err(error) => Err(error),
    };
    credentials::remove()?;
    let revoked = revoked.map_err(|error| {
        CliError::Server(format!(
            "forgot the local token, but could not revoke it on the server: {error}"
        ))
    })?;
    if json {
        print_json(
            &json!({"url": credentials.url, "email": credentials.email, "revoked": revoked}),
        );
    } else if revoked {
        outln!(
            "logged out of {} ({}): token revoked and forgotten",
            credentials.url,
            credentials.email
        );
    } else {
        outln!(
            "logged out of {} ({}): token forgotten (the server did not revoke it: it has no logout, or the token had already expired)",
            credentials.url, credentials.email
        );
    }
    Ok(Outcome::Done)
}
