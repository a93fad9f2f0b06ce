// Forward sensitivities of a MuJoCo closed loop in C: the rollout cost's gradient in G controller gains
// without a Python call per step (envs/mujoco_closed_loop.py documents the method and the families).
//
// Controller: u_t = sat(W (x_t - r_t)), sat = scale * tanh(.) or the identity, W = W(theta) [nu, nx] with
// D_g = dW / dtheta_g [G, nu, nx]. Cost: sum_t sum_j q_j (x_tj - c_tj)^2 + effort |u_t|^2
// + site_weight sum_s |p_s(x_t) - p*_ts|^2. State x = [qpos, qvel, act]; sensitivities live in MuJoCo's
// tangent space [dq (nv), qvel (nv), act (na)].
//
// Per step and gain g, the step is differenced along the gain's tangent (S_g, theta_g) from the nominal
// state's whole integration state, both sides, on a thread pool (OpenMP, one mjData per thread). Where the
// two one-sided differences disagree (a contact switch, or curvature below the step), the difference is
// retried at h/10 and h/100, then taken on the side that keeps the nominal state's constraint set, as
// envs/mujoco_jacobian.py does per Jacobian column.
#include <mujoco/mujoco.h>
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace py = pybind11;
using Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

namespace {

constexpr double kMaxValue = 1e8;  // envs/mujoco_dynamics.py's MAX_VALUE: beyond it a rollout is diverging
const int kBadWarnings[] = {mjWARN_BADQACC, mjWARN_BADQVEL, mjWARN_BADQPOS, mjWARN_BADCTRL};

// The constraint set of the state a step started from: contacts by geom pair, each row's type, id, state.
using Signature = std::tuple<std::vector<std::pair<int, int>>, std::vector<int>, std::vector<int>, std::vector<int>>;

struct Problem {
  const mjModel* m;      // the trajectory's model
  const mjModel* tight;  // the same model, solver run to a tight tolerance: the differences' steps
  int nq, nv, na, nu, nx, ntan, G, T, ns;
  bool hinges_only, tanh_sat, sites_after_step;
  const double *W, *D, *ref, *scale, *qw, *cref, *site_ref;
  const int* sites;
  double effort, site_weight;

  // u [nu] = sat((W + delta D_g) (x - r_t)); g < 0: W alone.
  void policy(const double* x, int t, int g, double delta, double* u) const {
    const double* r = ref + static_cast<size_t>(t) * nx;
    for (int i = 0; i < nu; ++i) {
      const double* w = W + static_cast<size_t>(i) * nx;
      const double* dg = g >= 0 ? D + (static_cast<size_t>(g) * nu + i) * nx : nullptr;
      double z = 0.0;
      for (int j = 0; j < nx; ++j) z += (dg ? w[j] + delta * dg[j] : w[j]) * (x[j] - r[j]);
      u[i] = tanh_sat ? scale[i] * std::tanh(z) : z;
    }
  }

  // The cost of (x, u) at time t; site positions from d (its kinematics at x).
  double cost(const double* x, const double* u, int t, const mjData* d) const {
    const double* c = cref + static_cast<size_t>(t) * nx;
    double total = 0.0;
    for (int j = 0; j < nx; ++j) total += qw[j] * (x[j] - c[j]) * (x[j] - c[j]);
    double uu = 0.0;
    for (int i = 0; i < nu; ++i) uu += u[i] * u[i];
    total += effort * uu;
    for (int s = 0; s < ns; ++s) {
      const double* p = d->site_xpos + 3 * sites[s];
      const double* target = site_ref + (static_cast<size_t>(t) * ns + s) * 3;
      for (int k = 0; k < 3; ++k) total += site_weight * (p[k] - target[k]) * (p[k] - target[k]);
    }
    return total;
  }
};

bool diverged(const mjData* d, const double* x, int nx) {
  for (int w : kBadWarnings)
    if (d->warning[w].number > 0) return true;
  for (int j = 0; j < nx; ++j)
    if (!std::isfinite(x[j]) || std::abs(x[j]) > kMaxValue) return true;
  return false;
}

void read_x(const mjModel* m, const mjData* d, double* x) {
  std::memcpy(x, d->qpos, sizeof(double) * m->nq);
  std::memcpy(x + m->nq, d->qvel, sizeof(double) * m->nv);
  std::memcpy(x + m->nq + m->nv, d->act, sizeof(double) * m->na);
}

Signature signature(const mjData* d) {
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < d->ncon; ++i) pairs.emplace_back(d->contact[i].geom[0], d->contact[i].geom[1]);
  std::sort(pairs.begin(), pairs.end());
  const int n = d->nefc;
  return {pairs, std::vector<int>(d->efc_type, d->efc_type + n), std::vector<int>(d->efc_id, d->efc_id + n),
          std::vector<int>(d->efc_state, d->efc_state + n)};
}

// Loads the integration state `start` moved by delta along gain g's tangent S_g [ntan] (g < 0: not moved)
// into d, with the policy's control at it: x [nx], u [nu].
void prepare(const Problem& p, mjData* d, const double* start, int t, int g, const double* S_g, double delta,
             double* x, double* u) {
  const mjModel* m = p.tight;
  mj_setState(m, d, start, mjSTATE_INTEGRATION);
  if (g >= 0 && p.hinges_only) {
    for (int k = 0; k < p.nq; ++k) d->qpos[k] += delta * S_g[k];
  } else if (g >= 0) {
    // moved on the manifold, added as a coordinate change: mj_integratePos normalises quaternions, and the
    // policy and the cost read qpos as it is (a start state need not hold unit quaternions)
    thread_local std::vector<double> moved, base;
    moved.assign(d->qpos, d->qpos + p.nq);
    base = moved;
    mj_integratePos(m, moved.data(), S_g, delta);
    mj_normalizeQuat(m, base.data());
    for (int k = 0; k < p.nq; ++k) d->qpos[k] += moved[k] - base[k];
  }
  if (g >= 0) {
    for (int k = 0; k < p.nv; ++k) d->qvel[k] += delta * S_g[p.nv + k];
    for (int k = 0; k < p.na; ++k) d->act[k] += delta * S_g[2 * p.nv + k];
  }
  read_x(m, d, x);
  p.policy(x, t, g, delta, u);
  std::memcpy(d->ctrl, u, sizeof(double) * p.nu);
}

// mj_step of d (state and ctrl set: x [nx], u [nu]) on model m, warnings cleared first; returns the cost of
// (x, u) at time t, its sites read at the step's start (by mj_step's own kinematics, or before it for RK4).
double step_and_cost(const Problem& p, const mjModel* m, mjData* d, const double* x, const double* u, int t) {
  for (int w : kBadWarnings) d->warning[w].number = 0;
  if (p.sites_after_step || !p.ns) {
    mj_step(m, d);
    return p.cost(x, u, t, d);
  }
  mj_kinematics(m, d);
  const double c = p.cost(x, u, t, d);
  mj_step(m, d);
  return c;
}

// One step from the moved state (see prepare) on the tight model: the next x into y [nx]; returns the cost
// at the moved state, NaN if the step diverged.
double run(const Problem& p, mjData* d, const double* start, int t, int g, const double* S_g, double delta,
           double* x, double* u, double* y) {
  prepare(p, d, start, t, g, S_g, delta, x, u);
  const double c = step_and_cost(p, p.tight, d, x, u, t);
  read_x(p.tight, d, y);
  return diverged(d, y, p.nx) ? std::nan("") : c;
}

// The constraint set at the moved state (see prepare), from mj_forward there.
Signature signature_at(const Problem& p, mjData* d, const double* start, int t, int g, const double* S_g,
                       double delta, double* x, double* u) {
  prepare(p, d, start, t, g, S_g, delta, x, u);
  mj_forward(p.tight, d);
  return signature(d);
}

// b - a in tangent coordinates [ntan], for states a, b [nx].
void tangent(const Problem& p, const double* a, const double* b, double* out) {
  if (p.hinges_only) {
    for (int k = 0; k < p.nx; ++k) out[k] = b[k] - a[k];
    return;
  }
  mj_differentiatePos(p.tight, out, 1.0, a, b);
  for (int k = 0; k < p.nv + p.na; ++k) out[p.nv + k] = b[p.nq + k] - a[p.nq + k];
}

struct Stats {
  int64_t columns = 0, flagged = 0, shrunk = 0, one_sided = 0, unresolved = 0;
};

// Per-thread scratch: an mjData of the tight model and vectors for a job.
struct Scratch {
  mjData* d;
  std::vector<double> x, u;
};

}  // namespace

py::tuple closed_loop(uintptr_t model_addr, uintptr_t tight_addr, Array start0, int T, Array W, Array D, Array ref,
                      Array scale, Array qw, Array cref, double effort, IntArray sites, Array site_ref,
                      double site_weight, double eps, double tol, int nthread, bool store) {
  Problem p;
  p.m = reinterpret_cast<const mjModel*>(model_addr);
  p.tight = reinterpret_cast<const mjModel*>(tight_addr);
  const mjModel* m = p.m;
  p.nq = m->nq, p.nv = m->nv, p.na = m->na, p.nu = m->nu;
  p.nx = p.nq + p.nv + p.na, p.ntan = 2 * p.nv + p.na;
  p.G = static_cast<int>(D.shape(0)), p.T = T, p.ns = static_cast<int>(sites.size());
  p.hinges_only = p.nq == p.nv;
  p.tanh_sat = scale.size() > 0;
  p.sites_after_step = m->opt.integrator != mjINT_RK4;  // mj_step's kinematics are then the start state's
  p.W = W.data(), p.D = D.data(), p.ref = ref.data(), p.scale = scale.data(), p.qw = qw.data();
  p.cref = cref.data(), p.site_ref = site_ref.data(), p.sites = sites.data();
  p.effort = effort, p.site_weight = site_weight;
  const int nint = mj_stateSize(m, mjSTATE_INTEGRATION);
  if (start0.size() != nint) throw std::invalid_argument("start state must have mj_stateSize(INTEGRATION) entries");
  const int G = p.G, nx = p.nx, ntan = p.ntan;

  std::vector<double> S(static_cast<size_t>(G) * ntan, 0.0), S_next(S.size()), dJ(G, 0.0);
  std::vector<double> start(nint), x(nx), u(p.nu), y0(nx);
  const int njobs = 2 * G;
  std::vector<double> ys(static_cast<size_t>(njobs) * nx), cs(njobs), hs(G);
  const int nth = std::max(1, std::min(nthread, njobs));
  std::vector<Scratch> scratch(nth);
  for (auto& s : scratch) s = {mj_makeData(p.tight), std::vector<double>(nx), std::vector<double>(p.nu)};
  mjData* nominal = mj_makeData(m);
  mjData* serial = scratch[0].d;
  mj_setState(m, nominal, start0.data(), mjSTATE_INTEGRATION);
  const int kept = store ? T + 1 : 1;
  Array states({kept, nx});
  double* out_states = states.mutable_data();
  Array final_array({nint});  // the last state's whole integration state, for continuing the simulation
  double* final_state = final_array.mutable_data();
  double J = 0.0;
  Stats stats;
  int status = 0, status_step = -1;
  std::vector<double> plus(ntan), minus(ntan), ya(nx), yb(nx), far(ntan);

  auto free_all = [&]() {
    for (auto& s : scratch) mj_deleteData(s.d);
    mj_deleteData(nominal);
  };
  auto agree = [&](const double* a, const double* b) {
    double diff = 0.0, mag = 0.0;
    for (int k = 0; k < ntan; ++k) {
      diff = std::max(diff, std::abs(a[k] - b[k]));
      mag = std::max(mag, std::abs(a[k] + b[k]));
    }
    return diff <= tol * (1.0 + 0.5 * mag);
  };
  // One-sided differences of gain g at step size h from the nominal next state y0 (tangent units per h).
  auto sides = [&](int t, int g, double h, Signature* sp, Signature* sm) {
    const double* Sg = S.data() + static_cast<size_t>(g) * ntan;
    double *xs = scratch[0].x.data(), *us = scratch[0].u.data();
    if (sp) *sp = signature_at(p, serial, start.data(), t, g, Sg, h, xs, us);
    if (sm) *sm = signature_at(p, serial, start.data(), t, g, Sg, -h, xs, us);
    run(p, serial, start.data(), t, g, Sg, h, xs, us, ya.data());
    run(p, serial, start.data(), t, g, Sg, -h, xs, us, yb.data());
    tangent(p, y0.data(), ya.data(), plus.data());
    tangent(p, yb.data(), y0.data(), minus.data());
    for (int k = 0; k < ntan; ++k) plus[k] /= h, minus[k] /= h;
  };

  {
  py::gil_scoped_release unlocked;  // no Python object is touched in this block
  for (int t = 0; t < T; ++t) {
    read_x(m, nominal, x.data());
    if (store) std::memcpy(out_states + static_cast<size_t>(t) * nx, x.data(), sizeof(double) * nx);
    mj_getState(m, nominal, start.data(), mjSTATE_INTEGRATION);
    // step sizes: h_g moves the state and the control by about eps along gain g's tangent
    for (int g = 0; g < G; ++g) {
      const double* Sg = S.data() + static_cast<size_t>(g) * ntan;
      double size = 0.0;
      for (int k = 0; k < ntan; ++k) size = std::max(size, std::abs(Sg[k]));
      const double* r = p.ref + static_cast<size_t>(t) * nx;
      for (int i = 0; i < p.nu; ++i) {
        const double* dg = p.D + (static_cast<size_t>(g) * p.nu + i) * nx;
        double du = 0.0;
        for (int j = 0; j < nx; ++j) du += dg[j] * (x[j] - r[j]);
        size = std::max(size, std::abs(du));
      }
      hs[g] = size > 0.0 ? eps / size : 0.0;
    }
    // the nominal step (the trajectory's model) and every gain's two sides (the tight model), on the pool
    double c_nom = 0.0;
    bool bad_job = false, bad_control = false;
#pragma omp parallel num_threads(nth)
    {
      Scratch& s = scratch[omp_get_thread_num()];
#pragma omp single nowait
      {
        p.policy(x.data(), t, -1, 0.0, u.data());
        for (int i = 0; i < p.nu; ++i)
          if (!std::isfinite(u[i]) || std::abs(u[i]) > kMaxValue) bad_control = true;
        std::memcpy(nominal->ctrl, u.data(), sizeof(double) * p.nu);
        c_nom = step_and_cost(p, m, nominal, x.data(), u.data(), t);
      }
#pragma omp for schedule(static)
      for (int j = 0; j < njobs; ++j) {
        const int g = j / 2;
        const double h = (j % 2 ? -1.0 : 1.0) * hs[g];
        if (hs[g] > 0.0) {
          cs[j] = run(p, s.d, start.data(), t, g, S.data() + static_cast<size_t>(g) * ntan, h, s.x.data(),
                      s.u.data(), ys.data() + static_cast<size_t>(j) * nx);
          if (std::isnan(cs[j])) {
#pragma omp atomic write
            bad_job = true;
          }
        }
      }
    }
    read_x(m, nominal, y0.data());  // the nominal next state; its tight twin when a side check needs it
    if (bad_control || diverged(nominal, y0.data(), nx)) {
      status = 1, status_step = t;
      break;
    }
    if (bad_job) {
      status = 2, status_step = t;
      break;
    }
    J += c_nom;
    stats.columns += G;
    bool tight_y0 = false;
    for (int g = 0; g < G; ++g) {
      double* out = S_next.data() + static_cast<size_t>(g) * ntan;
      const double h = hs[g];
      if (h == 0.0) {  // nothing moves along this gain at this step
        std::fill(out, out + ntan, 0.0);
        continue;
      }
      dJ[g] += (cs[2 * g] - cs[2 * g + 1]) / (2.0 * h);
      const double* yp = ys.data() + static_cast<size_t>(2 * g) * nx;
      const double* ym = ys.data() + static_cast<size_t>(2 * g + 1) * nx;
      auto one_sided = [&]() {
        tangent(p, y0.data(), yp, plus.data());
        tangent(p, ym, y0.data(), minus.data());
        for (int k = 0; k < ntan; ++k) plus[k] /= h, minus[k] /= h;
      };
      one_sided();
      bool ok = agree(plus.data(), minus.data());
      if (!ok && !tight_y0) {
        // the check ran against the trajectory's own next state (solver tolerance of the model): with the
        // twin solved as tightly as the perturbed steps, the sides may agree after all (the central
        // difference taken never reads y0; only this check and the one-sided fallbacks do)
        run(p, serial, start.data(), t, -1, nullptr, 0.0, scratch[0].x.data(), scratch[0].u.data(), y0.data());
        tight_y0 = true;
        one_sided();
        ok = agree(plus.data(), minus.data());
      }
      if (!ok) {
        ++stats.flagged;
        for (double hl = h / 10; hl >= h / 100 * 0.99 && !ok; hl /= 10) {  // smaller steps first
          sides(t, g, hl, nullptr, nullptr);
          ok = agree(plus.data(), minus.data());
          stats.shrunk += ok;
        }
      }
      if (!ok) {  // the sides still disagree: the difference on the side that keeps the nominal constraint set
        Signature sp, sm;
        const Signature nominal_sig =
            signature_at(p, serial, start.data(), t, -1, nullptr, 0.0, scratch[0].x.data(), scratch[0].u.data());
        std::vector<double> fallback;
        double hl = h;
        for (int level = 0; level < 3 && !ok; ++level, hl /= 10) {
          sides(t, g, hl, &sp, &sm);
          const bool kp = sp == nominal_sig, km = sm == nominal_sig;
          if (kp && km && (agree(plus.data(), minus.data()) || level == 2)) {
            ok = true;
            break;
          }
          if ((kp || km) && fallback.empty()) {
            const double sign = kp ? 1.0 : -1.0;
            fallback.assign(ntan, 0.0);
            for (int k = 0; k < ntan; ++k) fallback[k] = kp ? plus[k] : minus[k];  // sign * near
            const double* Sg = S.data() + static_cast<size_t>(g) * ntan;
            double *xs = scratch[0].x.data(), *us = scratch[0].u.data();
            if (signature_at(p, serial, start.data(), t, g, Sg, 2 * sign * hl, xs, us) == nominal_sig) {
              // second order: (4 f(h) - f(2h) - 3 f(0)) / 2h
              run(p, serial, start.data(), t, g, Sg, 2 * sign * hl, xs, us, ya.data());
              tangent(p, y0.data(), ya.data(), far.data());
              for (int k = 0; k < ntan; ++k) fallback[k] = 2.0 * fallback[k] - 0.5 * sign * far[k] / hl;
            }
          }
        }
        if (ok) {
          // both sides keep the set: central difference below
        } else if (!fallback.empty()) {
          ++stats.one_sided;
          std::copy(fallback.begin(), fallback.end(), out);
          continue;
        } else {
          ++stats.unresolved;
          double mp = 0.0, mm = 0.0;
          for (int k = 0; k < ntan; ++k) mp = std::max(mp, std::abs(plus[k])), mm = std::max(mm, std::abs(minus[k]));
          const double* best = mp <= mm ? plus.data() : minus.data();
          std::copy(best, best + ntan, out);
          continue;
        }
      }
      for (int k = 0; k < ntan; ++k) out[k] = 0.5 * (plus[k] + minus[k]);
    }
    S.swap(S_next);
  }
  if (status == 0) {
    read_x(m, nominal, x.data());
    std::memcpy(out_states + static_cast<size_t>(store ? T : 0) * nx, x.data(), sizeof(double) * nx);
    mj_getState(m, nominal, final_state, mjSTATE_INTEGRATION);
  }
  free_all();
  }
  Array grad({G});
  std::copy(dJ.begin(), dJ.end(), grad.mutable_data());
  py::array_t<int64_t> st({5});
  auto* sd = st.mutable_data();
  sd[0] = stats.columns, sd[1] = stats.flagged, sd[2] = stats.shrunk, sd[3] = stats.one_sided, sd[4] = stats.unresolved;
  return py::make_tuple(J, grad, states, final_array, st, status, status_step);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.doc() = "Forward sensitivities of a MuJoCo closed loop (envs/mujoco_closed_loop.py)";
  mod.def("closed_loop", &closed_loop);
  mod.attr("MAX_VALUE") = kMaxValue;
}
