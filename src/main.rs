use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecs_image_operator::{allocator, api, ecs, emulator, operator};

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
    Run(operator::RunArgs),
    /// Print all CustomResourceDefinitions as one YAML stream.
    Crd,
    /// Run the ECS emulator.
    Emulator(emulator::EmulatorArgs),
    /// Make one signed ECS call and print the JSON response.
    Ecs(ecs::cli::EcsCallArgs),
}

fn main() -> ExitCode {
    allocator::configure();
    let command = Cli::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ecs-image-operator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Command::Run(args) => operator::run(args).await,
            Command::Crd => print_crds(),
            Command::Emulator(args) => emulator::run(args).await,
            Command::Ecs(args) => ecs::cli::run(args).await,
        }
    })
}

fn print_crds() -> ExitCode {
    match api::crds_yaml() {
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
