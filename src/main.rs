use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecs_image_operator::emulator;

/// Manages Alibaba Cloud ECS image copy, import and export tasks from Kubernetes.
#[derive(Parser)]
#[command(name = "ecs-image-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run,
    /// Print all CustomResourceDefinitions as one YAML stream.
    Crd,
    /// Run the ECS emulator.
    Emulator(emulator::EmulatorArgs),
    /// Make one signed ECS call and print the JSON response.
    Ecs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Run => "run",
        Command::Crd => "crd",
        Command::Emulator(args) => return emulator::run(args).await,
        Command::Ecs => "ecs",
    };
    eprintln!("ecs-image-operator {name}: not available yet");
    ExitCode::from(2)
}
