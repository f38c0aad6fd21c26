//! Checks of the coordinator's steps against closed forms.

use super::*;
use crate::{Regularizer, RhoBalancing};

/// Minimizes a one-dimensional convex function by golden-section search.
fn numeric_argmin(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let a = hi - ratio * (hi - lo);
        let b = lo + ratio * (hi - lo);
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    0.5 * (lo + hi)
}

#[test]
fn z_update_matches_numeric_minimizer() {
    let regularizers = [
        Regularizer::None,
        Regularizer::L2 { gamma: 0.7 },
        Regularizer::L1 { gamma: 0.3 },
        Regularizer::L1 { gamma: 5.0 },
    ];
    for regularizer in regularizers {
        for &v in &[-2.0, -0.05, 0.0, 0.4, 3.0] {
            for &n_rho in &[0.5, 2.0, 40.0] {
                let closed = regularizer.prox(v, n_rho);
                let objective = |z: f64| {
                    let g = match regularizer {
                        Regularizer::None => 0.0,
                        Regularizer::L2 { gamma } => 0.5 * gamma * z * z,
                        Regularizer::L1 { gamma } => gamma * z.abs(),
                    };
                    g + 0.5 * n_rho * (z - v).powi(2)
                };
                let numeric = numeric_argmin(objective, -10.0, 10.0);
                assert!(
                    (closed - numeric).abs() < 1e-6,
                    "{regularizer:?} v={v} Nρ={n_rho}: closed form {closed}, numeric {numeric}"
                );
            }
        }
    }
}

/// Exact x-update of f_i(x) = ½‖x − a‖²: (a + ρ(z − u)) / (1 + ρ).
fn quadratic_x_update(a: &[f32], z: &[f32], u: &[f32], rho: f64) -> Vec<f32> {
    a.iter()
        .zip(z.iter().zip(u))
        .map(|(&a, (&z, &u))| {
            ((f64::from(a) + rho * (f64::from(z) - f64::from(u))) / (1.0 + rho)) as f32
        })
        .collect()
}

fn targets() -> Vec<Vec<f32>> {
    vec![
        vec![1.0, -2.0, 0.5],
        vec![3.0, 0.0, -1.5],
        vec![-1.0, 4.0, 2.5],
        vec![0.5, 1.0, 0.0],
    ]
}

fn run_quadratic_consensus(config: &AdmmConfig, rounds: u64) -> ConsensusState {
    let a = targets();
    let mut state = ConsensusState::new(vec![0.0; 3], a.len(), config.rho);
    for _ in 0..rounds {
        for (i, target) in a.iter().enumerate() {
            let x = quadratic_x_update(target, &state.z, &state.duals[i], state.rho);
            state.set_local(i, &x).unwrap();
        }
        if state.step(config).stop.is_some() {
            break;
        }
    }
    state
}

#[test]
fn consensus_reaches_mean_for_each_rho() {
    let a = targets();
    let mean: Vec<f64> = (0..3)
        .map(|j| a.iter().map(|t| f64::from(t[j])).sum::<f64>() / a.len() as f64)
        .collect();
    for rho in [1e-3, 1.0, 1e3] {
        let config = AdmmConfig {
            rho,
            eps_abs: 1e-7,
            eps_rel: 1e-7,
            max_rounds: 200_000,
            ..Default::default()
        };
        let state = run_quadratic_consensus(&config, config.max_rounds);
        for (j, &expected) in mean.iter().enumerate() {
            let err = (f64::from(state.z[j]) - expected).abs();
            assert!(
                err < 1e-4,
                "rho={rho}: z[{j}]={} expected {} (round {})",
                state.z[j],
                expected,
                state.round
            );
        }
    }
}

#[test]
fn adaptive_rho_reaches_mean_from_bad_start() {
    let config = AdmmConfig {
        rho: 1e-3,
        adaptive_rho: Some(RhoBalancing::default()),
        eps_abs: 1e-7,
        eps_rel: 1e-7,
        max_rounds: 5_000,
        ..Default::default()
    };
    let state = run_quadratic_consensus(&config, config.max_rounds);
    assert!(
        (f64::from(state.z[0]) - 0.875).abs() < 1e-4,
        "z[0]={}",
        state.z[0]
    );
    assert!(state.rho > 1e-3, "rho never grew: {}", state.rho);
}

#[test]
fn residuals_match_definitions() {
    let mut state = ConsensusState::new(vec![1.0, 2.0], 2, 2.0);
    state.locals = vec![vec![2.0, 2.0], vec![1.0, 4.0]];
    state.duals = vec![vec![0.5, 0.0], vec![0.0, -1.0]];
    state.z_prev = vec![0.0, 2.0];
    let config = AdmmConfig {
        eps_abs: 0.1,
        eps_rel: 0.01,
        ..Default::default()
    };
    let r = state.residuals(&config);
    // Σ‖x_i − z‖² = (1 + 0) + (0 + 4) = 5.
    assert!((r.primal - 5f64.sqrt()).abs() < 1e-12);
    // ρ·sqrt(N)·‖z − z_prev‖ = 2·sqrt(2)·1.
    assert!((r.dual - 2.0 * 2f64.sqrt()).abs() < 1e-12);
    let scale = (2.0f64 * 2.0).sqrt() * 0.1;
    // max(sqrt(Σ‖x_i‖²) = sqrt(8 + 17), sqrt(2)·sqrt(5)) = 5.
    assert!((r.eps_primal - (scale + 0.01 * 5.0)).abs() < 1e-12);
    // ρ·sqrt(Σ‖u_i‖²) = 2·sqrt(1.25).
    assert!((r.eps_dual - (scale + 0.01 * 2.0 * 1.25f64.sqrt())).abs() < 1e-12);
}

#[test]
fn rho_change_keeps_unscaled_duals() {
    let mut state = ConsensusState::new(vec![0.0; 3], 2, 4.0);
    state.duals = vec![vec![0.25, -1.0, 3.0], vec![2.0, 0.0, -0.5]];
    let before: Vec<Vec<f64>> = state
        .duals
        .iter()
        .map(|u| u.iter().map(|&v| 4.0 * f64::from(v)).collect())
        .collect();
    state.rescale_rho(0.5);
    for (u, lambda) in state.duals.iter().zip(&before) {
        for (&v, &l) in u.iter().zip(lambda) {
            assert!(
                (0.5 * f64::from(v) - l).abs() < 1e-6,
                "λ changed: {l} -> {}",
                0.5 * v
            );
        }
    }
    assert_eq!(state.rho, 0.5);
}

#[test]
fn over_relaxation_matches_formula() {
    let alpha = 1.6;
    let rho = 1.5;
    let z0 = vec![1.0f32, -1.0];
    let mut state = ConsensusState::new(z0.clone(), 2, rho);
    state.duals = vec![vec![0.1, 0.2], vec![-0.3, 0.4]];
    let locals = [vec![2.0f32, 0.5], vec![0.0, -3.0]];
    for (i, x) in locals.iter().enumerate() {
        state.set_local(i, x).unwrap();
    }
    let duals_before = state.duals.clone();
    let config = AdmmConfig {
        rho,
        alpha,
        ..Default::default()
    };
    state.step(&config);
    for j in 0..2 {
        let relaxed: Vec<f64> = (0..2)
            .map(|i| alpha * f64::from(locals[i][j]) + (1.0 - alpha) * f64::from(z0[j]))
            .collect();
        let v = (0..2)
            .map(|i| relaxed[i] + f64::from(duals_before[i][j]))
            .sum::<f64>()
            / 2.0;
        assert!((f64::from(state.z[j]) - v).abs() < 1e-6, "z[{j}]");
        for i in 0..2 {
            let u = f64::from(duals_before[i][j]) + relaxed[i] - v;
            assert!(
                (f64::from(state.duals[i][j]) - u).abs() < 1e-6,
                "u[{i}][{j}]"
            );
        }
    }
}

/// The two-block regression split keeps θ₁ at one worker and θ₂ = z at the
/// coordinator with g = ½‖z‖². Its unscaled dual λ sits on θ₂ − θ₁ = 0, the
/// opposite sign of the general form's x − z = 0, so λ = −ρ·u and the
/// z-update must equal θ₂ = (ρ·θ₁ − λ)/(1 + ρ).
#[test]
fn two_block_theta2_formula() {
    for rho in [0.1, 1.0, 7.5] {
        let theta1 = vec![0.8f32, -2.0, 3.5];
        let lambda = [0.3f64, -0.6, 1.2];
        let mut state = ConsensusState::new(vec![0.0; 3], 1, rho);
        state.duals[0] = lambda.iter().map(|&l| (-l / rho) as f32).collect();
        state.set_local(0, &theta1).unwrap();
        let config = AdmmConfig {
            rho,
            regularizer: Regularizer::L2 { gamma: 1.0 },
            ..Default::default()
        };
        state.step(&config);
        for j in 0..3 {
            let theta2 = (rho * f64::from(theta1[j]) - lambda[j]) / (1.0 + rho);
            assert!(
                (f64::from(state.z[j]) - theta2).abs() < 1e-5,
                "rho={rho} j={j}"
            );
            // λ ← λ + ρ(θ₂ − θ₁), mapped back through λ = −ρ·u.
            let lambda_next = lambda[j] + rho * (theta2 - f64::from(theta1[j]));
            assert!((-rho * f64::from(state.duals[0][j]) - lambda_next).abs() < 1e-5);
        }
    }
}

#[test]
fn bad_locals_rejected_without_touching_state() {
    let mut state = ConsensusState::new(vec![1.0; 4], 2, 1.0);
    let z_before = state.z.clone();
    let err = state.set_local(0, &[1.0; 3]).unwrap_err();
    assert_eq!(
        err,
        StateError::Length {
            worker: 0,
            expected: 4,
            got: 3
        }
    );
    let err = state.set_local(1, &[1.0, f32::NAN, 1.0, 1.0]).unwrap_err();
    assert!(matches!(
        err,
        StateError::NonFinite {
            worker: 1,
            index: 1,
            ..
        }
    ));
    let err = state.set_local(5, &[1.0; 4]).unwrap_err();
    assert_eq!(
        err,
        StateError::UnknownWorker {
            worker: 5,
            num_workers: 2
        }
    );
    assert_eq!(state.z, z_before);
    assert_eq!(state.locals, vec![vec![1.0; 4]; 2]);
}

#[test]
fn stale_worker_keeps_its_dual() {
    let mut state = ConsensusState::new(vec![0.0; 2], 2, 1.0);
    state.duals = vec![vec![0.5, 0.5], vec![-1.0, 2.0]];
    state.locals = vec![vec![1.0, 1.0], vec![3.0, -1.0]];
    let config = AdmmConfig::default();
    state.step_partial(&config, &[true, false]);
    // z = mean(x_i + u_i) uses the stale block too.
    assert_eq!(state.z, vec![1.75, 1.25]);
    // The fresh dual moves by x − z, the stale one stays.
    assert_eq!(state.duals[0], vec![-0.25, 0.25]);
    assert_eq!(state.duals[1], vec![-1.0, 2.0]);
}
