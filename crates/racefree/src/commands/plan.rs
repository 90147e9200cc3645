//! `racefree plan --shards N`: the whole CI partition at once, for a pipeline that plans in
//! one job and hands each matrix job its list (`racefree run --files-from`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use racefree_runner::shard::{ShardPick, ShardSpec};
use racefree_runner::sharding::{self, Partition, PlanRequest};
use serde_json::json;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    /// `{"racefree_plan": 1, "shards": N, "predicted_secs": S, "partition": [...]}`.
    Json,
    /// One line of JSON for a GitHub Actions `strategy.matrix`: `{"include": [...]}`.
    GithubMatrix,
    /// `K<TAB>path`, one file per line.
    Lines,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Test paths and node ids, as for `racefree run`.
    pub paths: Vec<String>,

    /// How many shards (CI machines) to split the files over.
    #[arg(long, value_name = "N")]
    pub shards: usize,

    /// json, github-matrix or lines.
    #[arg(
        long,
        value_enum,
        default_value_t = PlanFormat::Json,
        value_name = "FORMAT",
        hide_possible_values = true
    )]
    pub format: PlanFormat,

    #[command(flatten)]
    pub durations: super::sharding::DurationsFileArgs,

    /// Plan without reading the run history.
    #[arg(long)]
    pub no_history: bool,

    /// Arguments for pytest, after `--` (as for `racefree run`).
    #[arg(last = true, value_name = "PYTEST_ARGS")]
    pub pytest_args: Vec<String>,
}

pub fn run(args: PlanArgs) -> miette::Result<ExitCode> {
    let invocation_dir: PathBuf = std::env::current_dir()
        .map_err(|e| miette::miette!("cannot read the current directory: {e}"))?;
    let request = PlanRequest {
        invocation_dir,
        args: args.paths,
        pytest_args: args.pytest_args,
        shards: args.shards,
        durations: args.durations.options(),
        no_history: args.no_history,
    };
    let partition = match sharding::plan(&request) {
        Ok(p) => p,
        Err(e) => return Ok(super::sharding::usage_error("racefree plan", &e)),
    };
    // The human summary goes to stderr so that stdout stays machine-readable.
    for (i, s) in partition.shards.iter().enumerate() {
        let pick = ShardPick {
            spec: ShardSpec {
                index: i + 1,
                total: args.shards,
            },
            files: s.files.clone(),
            predicted: s.predicted,
            total_predicted: partition.total_predicted,
        };
        eprintln!("racefree: {pick}");
    }
    print!("{}", render(&partition, args.format));
    Ok(ExitCode::SUCCESS)
}

/// The partition in `format`, ending in a newline.
pub fn render(partition: &Partition, format: PlanFormat) -> String {
    let total = partition.shards.len();
    let entries = || {
        partition.shards.iter().enumerate().map(move |(i, s)| {
            json!({
                "shard": i + 1,
                "shards": total,
                "spec": format!("{}/{}", i + 1, total),
                "predicted_secs": round(s.predicted),
                "files": s.files,
            })
        })
    };
    match format {
        PlanFormat::Json => {
            let doc = json!({
                "racefree_plan": 1,
                "shards": total,
                "predicted_secs": round(partition.total_predicted),
                "partition": entries().collect::<Vec<_>>(),
            });
            format!("{doc:#}\n")
        }
        PlanFormat::GithubMatrix => {
            format!("{}\n", json!({ "include": entries().collect::<Vec<_>>() }))
        }
        PlanFormat::Lines => {
            let mut out = String::new();
            for (i, s) in partition.shards.iter().enumerate() {
                for f in &s.files {
                    out.push_str(&format!("{}\t{f}\n", i + 1));
                }
            }
            out
        }
    }
}

/// Milliseconds are plenty for a plan, and keep the JSON readable.
fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use racefree_runner::shard::Shard;

    fn partition() -> Partition {
        Partition {
            shards: vec![
                Shard {
                    files: vec!["t/a.py".into()],
                    predicted: 2.0,
                },
                Shard {
                    files: vec!["t/b.py".into(), "t/c.py".into()],
                    predicted: 1.5,
                },
            ],
            total_predicted: 3.5,
        }
    }

    #[test]
    fn formats() {
        let p = partition();
        assert_eq!(
            render(&p, PlanFormat::Lines),
            "1\tt/a.py\n2\tt/b.py\n2\tt/c.py\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&p, PlanFormat::Json)).unwrap();
        assert_eq!(json["racefree_plan"], 1);
        assert_eq!(json["shards"], 2);
        assert_eq!(json["predicted_secs"], 3.5);
        assert_eq!(json["partition"][1]["spec"], "2/2");
        assert_eq!(json["partition"][1]["files"][1], "t/c.py");
        let matrix = render(&p, PlanFormat::GithubMatrix);
        // One line: it goes into $GITHUB_OUTPUT as `matrix=<json>`.
        assert_eq!(matrix.lines().count(), 1);
        let matrix: serde_json::Value = serde_json::from_str(&matrix).unwrap();
        assert_eq!(matrix["include"][0]["shard"], 1);
        assert_eq!(matrix["include"][0]["files"][0], "t/a.py");
    }
}
