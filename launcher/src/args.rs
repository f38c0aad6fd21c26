//! Turning resolved options back into the command-line flags of the
//! coordinator and worker binaries.

use admm_coordinator::config::RegularizerKind;
use admm_coordinator::faults::{FaultConfig, StragglerPolicy};
use admm_coordinator::AdmmArgs;
use admm_problems::gan::trainer::GanTraining;
use admm_problems::spec::{OptimizerKind, ProblemSpec, SolverSpec};

/// Flags that reproduce a problem spec.
pub fn problem_flags(spec: &ProblemSpec) -> Vec<String> {
    let mut flags = vec![
        "--problem".into(),
        spec.problem.to_string(),
        "--seed".into(),
        spec.seed.to_string(),
        "--hidden".into(),
        hidden_flag(&spec.hidden_layers()),
        "--dim".into(),
        spec.dim.to_string(),
        "--outputs".into(),
        spec.outputs.to_string(),
        "--samples".into(),
        spec.samples.to_string(),
        "--noise".into(),
        spec.noise.to_string(),
        "--train-limit".into(),
        spec.train_limit.to_string(),
        "--eval-samples".into(),
        spec.eval_samples.to_string(),
    ];
    if let Some(dir) = &spec.data_dir {
        flags.push("--data-dir".into());
        flags.push(dir.display().to_string());
    }
    let gan = &spec.gan;
    flags.extend([
        "--latent-dim".into(),
        gan.latent_dim.to_string(),
        "--g-filters".into(),
        gan.g_filters.to_string(),
        "--d-filters".into(),
        gan.d_filters.to_string(),
        "--real-workers".into(),
        gan.real_workers.to_string(),
        "--cross-weight".into(),
        gan.cross_weight.to_string(),
    ]);
    flags
}

/// Flags that reproduce the coordinator's GAN options.
pub fn gan_flags(training: &GanTraining) -> Vec<String> {
    let epochs: Vec<String> = training.sample_epochs.iter().map(f64::to_string).collect();
    vec![
        "--generator-steps".into(),
        training.generator_steps.to_string(),
        "--generator-batch-size".into(),
        training.generator_batch_size.to_string(),
        "--generator-lr".into(),
        training.generator_lr.to_string(),
        "--interleave-every".into(),
        training.interleave_every.to_string(),
        "--interleave-steps".into(),
        training.interleave_steps.to_string(),
        "--collapse-threshold".into(),
        training.collapse_threshold.to_string(),
        "--probe-size".into(),
        training.probe_size.to_string(),
        "--sample-every".into(),
        training.sample_every.to_string(),
        "--sample-epochs".into(),
        epochs.join(","),
        "--generator-device".into(),
        training.generator_device.clone(),
    ]
}

fn hidden_flag(layers: &[usize]) -> String {
    if layers.is_empty() {
        "none".into()
    } else {
        layers
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Flags that reproduce a solver spec.
pub fn solver_flags(spec: &SolverSpec) -> Vec<String> {
    let optimizer = match spec.optimizer {
        OptimizerKind::Adam => "adam",
        OptimizerKind::Sgd => "sgd",
    };
    let mut flags = vec![
        "--optimizer".into(),
        optimizer.into(),
        "--lr".into(),
        spec.lr.to_string(),
        "--momentum".into(),
        spec.momentum.to_string(),
        "--local-steps".into(),
        spec.local_steps.to_string(),
        "--batch-size".into(),
        spec.batch_size.to_string(),
    ];
    if let Some(beta1) = spec.beta1 {
        flags.push("--beta1".into());
        flags.push(beta1.to_string());
    }
    flags
}

/// Flags that reproduce the ADMM options.
pub fn admm_flags(args: &AdmmArgs) -> Vec<String> {
    let mut flags = vec![
        "--rho".into(),
        args.rho.to_string(),
        "--alpha".into(),
        args.alpha.to_string(),
        "--gamma".into(),
        args.gamma.to_string(),
        "--rho-mu".into(),
        args.rho_mu.to_string(),
        "--rho-tau".into(),
        args.rho_tau.to_string(),
        "--rho-min".into(),
        args.rho_min.to_string(),
        "--rho-max".into(),
        args.rho_max.to_string(),
        "--eps-abs".into(),
        args.eps_abs.to_string(),
        "--eps-rel".into(),
        args.eps_rel.to_string(),
        "--max-rounds".into(),
        args.max_rounds.to_string(),
    ];
    if let Some(kind) = args.regularizer {
        flags.push("--regularizer".into());
        flags.push(
            match kind {
                RegularizerKind::None => "none",
                RegularizerKind::L2 => "l2",
                RegularizerKind::L1 => "l1",
            }
            .into(),
        );
    }
    if args.adaptive_rho {
        flags.push("--adaptive-rho".into());
    }
    flags
}

/// Flags that reproduce the fault-tolerance options.
pub fn fault_flags(faults: &FaultConfig) -> Vec<String> {
    let policy = match faults.straggler_policy {
        StragglerPolicy::Wait => "wait",
        StragglerPolicy::Proceed => "proceed",
        StragglerPolicy::Fail => "fail",
    };
    let mut flags = vec![
        "--round-deadline".into(),
        faults.round_deadline_seconds.to_string(),
        "--straggler-policy".into(),
        policy.into(),
        "--heartbeat-interval-ms".into(),
        faults.heartbeat_interval_ms.to_string(),
        "--heartbeat-timeout".into(),
        faults.heartbeat_timeout_seconds.to_string(),
        "--checkpoint-every".into(),
        faults.checkpoint_every.to_string(),
        "--keepalive".into(),
        faults.keepalive_seconds.to_string(),
    ];
    if faults.resume {
        flags.push("--resume".into());
    }
    if faults.deterministic {
        flags.push("--deterministic".into());
    }
    flags
}
