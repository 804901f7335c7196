//! `scripts/demo.sh [--keep]`: starts a coordinator and two graders, runs the
//! demo flow with tables printed, then stops everything it started; with
//! `--keep` it leaves the cluster running, says how to sign in with the
//! `sqlarena` CLI, and stops it on Ctrl-C or SIGTERM.

use sqlarena_e2e::demo::{run_demo, DemoCluster};

#[tokio::main]
async fn main() {
    let mut keep = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("usage: scripts/demo.sh [--keep]\n  --keep  leave the coordinator and graders running to explore");
                return;
            }
            other => {
                eprintln!("demo: unknown argument {other:?} (usage: scripts/demo.sh [--keep])");
                std::process::exit(2);
            }
        }
    }
    println!("starting a coordinator (embedded store) and two graders; logs in target/e2e-logs/");
    let cluster = DemoCluster::start("demo").await;
    let url = cluster.coordinator.url().to_string();
    println!("coordinator at {url} (API docs: {url}/api/v1/docs)");
    let report = run_demo(&cluster, true).await;
    println!("\n{} attempts graded", report.attempts.len());
    if keep {
        let challenge_id = &report.challenge["id"];
        println!(
            "\nthe cluster keeps running (Ctrl-C stops everything).\
             \n\nopen the web console at {url}/ and sign in as ada@example.edu, alan@example.edu or\
             \nadmin@example.com (passwords: demo-password, admin-password), or use the CLI:\n\
             \n  export PATH=\"$PWD/target/debug:$PATH\"\
             \n  sqlarena login {url} --email ada@example.edu --password demo-password      # the professor (students: alan@, grace@, edgar@example.edu)\
             \n  sqlarena challenge show {challenge_id}\
             \n  sqlarena attempt show 1\
             \n  sqlarena login {url} --email admin@example.com --password admin-password   # the admin\
             \n  sqlarena grader ls\n"
        );
        wait_for_signal().await;
    }
    println!("stopping the graders and the coordinator");
    cluster.stop().await;
}

/// Returns on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
