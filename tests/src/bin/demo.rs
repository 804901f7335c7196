//! `scripts/demo.sh`: starts a coordinator and two graders, runs the demo
//! flow with tables printed, and stops everything it started.

use sqlarena_e2e::demo::{run_demo, DemoCluster};

#[tokio::main]
async fn main() {
    println!("starting a coordinator (embedded store) and two graders; logs in target/e2e-logs/");
    let cluster = DemoCluster::start("demo").await;
    println!(
        "coordinator at {} (API docs: {}/api/v1/docs)",
        cluster.coordinator.url(),
        cluster.coordinator.url()
    );
    let report = run_demo(&cluster, true).await;
    println!(
        "\n{} attempts graded; stopping the graders and the coordinator",
        report.attempts.len()
    );
    cluster.stop().await;
}
