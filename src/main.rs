use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecs_image_operator::ecs;

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
    Emulator,
    /// Make one signed ECS call and print the JSON response.
    Ecs(ecs::cli::EcsCallArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Crd => return print_crds(),
        Command::Ecs(args) => return ecs::cli::run(args).await,
        Command::Run => "run",
        Command::Emulator => "emulator",
    };
    eprintln!("ecs-image-operator {name}: not available yet");
    ExitCode::from(2)
}

fn print_crds() -> ExitCode {
    match ecs_image_operator::api::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ecs-image-operator crd: cannot render the CRDs: {err}");
            ExitCode::FAILURE
        }
    }
}
