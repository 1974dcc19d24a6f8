//! What the CLI prints on stdout (logs and progress go to stderr).
#![allow(clippy::print_stdout)]

use crate::setup::SetupReport;
use crate::summary::Summary;

pub fn print_setup(report: &SetupReport) {
    println!(
        "collection {} ({}), {} points upserted",
        report.collection,
        created_word(report.collection_created),
        report.points_upserted
    );
    println!("prompt {} @champion", report.prompt_reference);
    println!("chain {} @champion", report.chain_reference);
    println!(
        "endpoint {} ({})",
        report.endpoint,
        created_word(report.endpoint_created)
    );
    let answer: String = report.sample_answer.chars().take(160).collect();
    println!("sample answer: {answer}");
}

fn created_word(created: bool) -> &'static str {
    if created {
        "created"
    } else {
        "already existed"
    }
}

pub fn print_summary(summary: &Summary) {
    println!("{}", summary.one_line());
    println!();
    println!("{}", Summary::markdown_header());
    println!("{}", summary.markdown_row());
}
