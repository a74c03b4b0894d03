"""Cosmic-ray radio detection: find and clean nanosecond air-shower pulses in antenna traces.

A cosmic ray hitting the atmosphere makes an air shower whose electrons and positrons emit a
coherent radio flash of a few tens of nanoseconds (geomagnetic and Askaryan emission), seen by
antenna arrays such as LOFAR, AERA and GRAND in the 30-80 MHz band. Simulated traces
(200 MHz sampling as at LOFAR, 128 samples = 640 ns, one polarisation):

  galactic noise   -- the dominant background: Gaussian, sky temperature ~ nu^-2.55 so the
                      voltage spectrum falls as nu^-1.28, through the 30-80 MHz analogue band
                      filter (order-6 Butterworth magnitude, zero phase);
  RFI              -- 1-3 human-made narrow-band carriers at random in-band frequencies,
                      amplitudes 0.3-3 x the galactic RMS, random phases;
  ADC noise        -- white electronic noise over 0-100 MHz, 0.3 x the galactic RMS;
  the pulse        -- in half of the traces: a band-limited impulse through the same filter,
                      spectral slope nu^beta (beta in [-1, 0.5]: on / off the Cherenkov cone),
                      a random constant phase (unipolar to bipolar shapes), a random
                      sub-sample arrival time and a peak 0.7-12 x the galactic RMS
                      (log-uniform: from invisible to obvious).

SNR of a trace with respect to its pulse s (peak amplitude squared over the noise variance):
    SNR(z) = (a * max|s|)^2 / mean((z - a*s)^2),   a = <z, s> / <s, s>,
i.e. the part of a filter's output z proportional to the true pulse is signal, everything
else -- galactic noise, RFI, ADC noise left over and any distortion the filter adds -- is
noise. For the raw trace x = s + noise exactly, so a = 1 and SNR(x) = max|s|^2 / var(x - s).
The denoising SNR gain is SNR(output) / SNR(raw) in dB, median over the test traces that
hold a pulse. A filter that shrinks a weak pulse is not punished for the shrinking, one that
erases it is (a = 0). (For the weakest pulses, below 0 dB, chance correlation of the leftover
noise with the pulse shape inflates a, by about 2 dB for the unfiltered trace itself.)

Pre-processing, as in the air-shower pipelines: band-pass to 30-80 MHz and notch the RFI
lines (zero the spectral bins above 6 x the in-band median). The networks read that cleaned
trace (--input raw: the raw trace, so that they must learn the RFI rejection themselves).

Task 2, denoising: a bidirectional GRU outputs the clean pulse at every step (MSE; the
target of a pulse-free trace is 0). Baselines: the pre-processing alone (band-pass + notch),
and the band-pass alone.
Task 1, detection: the denoiser's bidirectional GRU (pre-trained on task 2) -> GRU -> Dense
gives the logit of P(a pulse has gone by) at every step, trained with binary cross-entropy
on that per-step label; the trace's P(pulse) is the output at its last step. Metric: ROC AUC
on held-out traces, overall and per bin of raw SNR (the bin's pulses against all pulse-free
traces); baselines: the peak |trace| after band-pass (a threshold trigger), and after
band-pass + notch. (Below 0 dB the band-pass trigger's AUC is above 0.5 for a spurious
reason: many of those traces are low-SNR because they carry strong RFI, which raises their
peak.)

    python examples/cosmic_ray_radio.py [--quick] [--out plot.png]
"""
import numpy as np

import fastrnn as fr

from _common import Timer, parser, run, save_figure

FS = 200.0                      # sampling rate, MHz (5 ns per sample)
F_LO, F_HI = 30.0, 80.0         # analogue band, MHz
T = 128                         # samples per trace (640 ns)
SCALE = 2.0                     # fixed input scale for the networks (~ trace RMS)
SNR_EDGES = (-np.inf, 0.0, 5.0, 10.0, 15.0, np.inf)     # dB bins of the raw-trace SNR


def band_response(f, order=6):
    """|H(f)| of the 30-80 MHz band filter (Butterworth high-pass x low-pass magnitudes)."""
    f = np.maximum(f, 1e-6)
    return 1 / np.sqrt((1 + (F_LO / f) ** (2 * order)) * (1 + (f / F_HI) ** (2 * order)))


def simulate_traces(n, seed=0, p_pulse=0.5, adc=0.3, peak_range=(0.7, 12.0)):
    """n antenna traces: (x, pulse, has_pulse); x = galactic + RFI + ADC noise + pulse, in
    units of the galactic-noise RMS. Spectra are built on 2T samples (zero-padded for the
    pulse, so it does not wrap around) and the first T kept."""
    rng = np.random.default_rng(seed)
    P = 2 * T
    f = np.fft.rfftfreq(P, 1 / FS)
    H = band_response(f)
    # Galactic noise: complex Gaussian spectrum with amplitude ~ nu^-1.28 through the filter.
    amp = H * (np.maximum(f, 1.0) / 50.0) ** -1.28
    spec = amp * (rng.standard_normal((n, f.size)) + 1j * rng.standard_normal((n, f.size)))
    gal = np.fft.irfft(spec, P)[:, :T]
    gal /= gal.std()
    # Narrow-band RFI: 1-3 constant carriers per trace.
    t_us = np.arange(T) / FS
    rfi = np.zeros((n, T))
    lines = rng.integers(1, 4, n)
    for k in range(3):
        freq = rng.uniform(F_LO + 2, F_HI - 2, n)
        a = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n)) * (k < lines)
        phase = rng.uniform(0, 2 * np.pi, n)
        rfi += a[:, None] * np.sin(2 * np.pi * freq[:, None] * t_us + phase[:, None])
    white = adc * rng.standard_normal((n, T))
    # The air-shower pulse: band-limited impulse, slope nu^beta, constant phase phi, arrival t0.
    has = rng.random(n) < p_pulse
    t0 = rng.uniform(0.15 * T, 0.85 * T, n)
    beta = rng.uniform(-1.0, 0.5, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    pspec = H * (np.maximum(f, 1.0) / 55.0) ** beta[:, None] * np.exp(
        1j * (phi[:, None] - 2 * np.pi * f * t0[:, None] / FS))
    pulse = np.fft.irfft(pspec, P)[:, :T]
    peak = np.exp(rng.uniform(*np.log(peak_range), n))
    pulse *= (peak * has / np.abs(pulse).max(1))[:, None]
    x = gal + rfi + white + pulse
    return x, pulse, has


def band_pass(x):
    """The 30-80 MHz filter applied offline (zero-padded FFT, zero phase)."""
    f = np.fft.rfftfreq(2 * T, 1 / FS)
    return np.fft.irfft(np.fft.rfft(x, 2 * T) * band_response(f), 2 * T)[..., :T]


def notch_rfi(x, k=6.0):
    """Band-pass, then zero the spectral bins whose power exceeds k x the in-band median:
    the usual RFI cleaning of radio air-shower pipelines."""
    f = np.fft.rfftfreq(2 * T, 1 / FS)
    X = np.fft.rfft(x, 2 * T) * band_response(f)
    power = np.abs(X) ** 2
    inband = (f > F_LO) & (f < F_HI)
    median = np.median(power[:, inband], axis=1, keepdims=True)
    X = np.where(power > k * median, 0, X)
    return np.fft.irfft(X, 2 * T)[..., :T]


def roc_auc(score, label):
    """Area under the ROC curve = P(score of a random positive > that of a random negative),
    ties counted half (Mann-Whitney U with average ranks)."""
    score, label = np.asarray(score, float), np.asarray(label, bool)
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    avg_rank = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]
    n_pos, n_neg = label.sum(), (~label).sum()
    return float((avg_rank[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(score, label):
    order = np.argsort(-np.asarray(score))
    lab = np.asarray(label, bool)[order]
    return np.r_[0, np.cumsum(~lab) / (~lab).sum()], np.r_[0, np.cumsum(lab) / lab.sum()]


def snr(z, pulse, raw=False):
    """Per-trace SNR (linear) of z with respect to the true pulse; see the module docstring.
    raw=True: z is the raw trace, z = pulse + noise exactly, so a = 1."""
    a = np.ones(len(z)) if raw else (z * pulse).sum(-1) / (pulse * pulse).sum(-1)
    resid = z - a[:, None] * pulse
    return (a * np.abs(pulse).max(-1)) ** 2 / (resid ** 2).mean(-1)


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--input", choices=("notched", "raw"), default="notched",
                   help="what the networks read: the RFI-notched trace (default) or the raw one")
    args = p.parse_args(argv)
    quick = args.quick
    n_train, n_test, H, ep_denoise, ep_detect = ((3000, 1000, 32, 6, 5) if quick else
                                                 (8000, 4000, 48, 12, 8))
    with Timer() as tg:
        x, pulse, has = simulate_traces(n_train + n_test, seed=args.seed)
        notched_all = notch_rfi(x)
    # The networks read the band-passed, RFI-notched trace (the standard pre-processing;
    # --input raw gives them the raw trace instead, and they must learn the RFI rejection).
    X = (notched_all if args.input == "notched" else x)[..., None] / SCALE
    X = X.astype(np.float32)
    S = (pulse / SCALE)[..., None].astype(np.float32)
    tr, te = slice(0, n_train), slice(n_train, None)
    xt, st, yt = x[te], pulse[te], has[te]

    # Task 2 first: its bidirectional GRU is reused by the detector.
    denoiser = fr.Sequential([fr.GRU(1, H, bidirectional=True), fr.Dense(1)], seed=args.seed)
    denoiser.compile(loss="mse", optimizer=fr.Adam(0.005, clipnorm=1.0))
    with Timer() as td:
        denoiser.fit(X[tr], S[tr], epochs=ep_denoise, batch_size=32, verbose=0)
    clean = denoiser.predict(X[te])[..., 0] * SCALE

    # Task 1: bidirectional GRU (initialised from the denoiser) -> GRU -> Dense -> logit of
    # P(pulse). Trained at every step on "a pulse has gone by" (0 before the pulse's peak + 3
    # samples, 1 after; 0 throughout for pulse-free traces): a loss on the last step alone
    # leaves the gradient too weak to learn the latch from. The trace's P(pulse) is the output
    # at its last step (what LastStep() would take).
    peak_at = np.abs(pulse).argmax(1)
    latch = ((np.arange(T) > peak_at[:, None] + 3) & has[:, None]).astype(np.float32)[..., None]
    detector = fr.Sequential([fr.GRU(1, H, bidirectional=True), fr.GRU(2 * H, 16), fr.Dense(1)],
                             seed=args.seed)
    detector.layers[0].load_state_dict(denoiser.layers[0].state_dict())
    detector.compile(loss="binary_cross_entropy", optimizer=fr.Adam(0.0025, clipnorm=1.0))
    with Timer() as tc:
        detector.fit(X[tr], latch[tr], epochs=ep_detect, batch_size=32, verbose=0)
    p_rnn = fr.sigmoid(detector.predict(X[te])[:, -1, 0])

    bp, notched = band_pass(xt), notched_all[te]
    scores = {"RNN": p_rnn, "peak |band-passed|": np.abs(bp).max(1),
              "peak |band-passed + notched|": np.abs(notched).max(1)}
    auc = {k: roc_auc(v, yt) for k, v in scores.items()}

    # Denoising on the test traces with a pulse.
    snr_in = snr(xt[yt], st[yt], raw=True)
    snr_in_db = 10 * np.log10(snr_in)
    gain = {"RNN": 10 * np.log10(snr(clean[yt], st[yt]) / snr_in),
            "band-pass": 10 * np.log10(snr(bp[yt], st[yt]) / snr_in),
            "band-pass + notch": 10 * np.log10(snr(notched[yt], st[yt]) / snr_in)}

    bins = list(zip(SNR_EDGES[:-1], SNR_EDGES[1:]))
    per_bin = []
    for lo, hi in bins:
        k = (snr_in_db >= lo) & (snr_in_db < hi)
        keep = ~yt
        keep[np.flatnonzero(yt)[k]] = True          # this bin's positives against all negatives
        per_bin.append({"bin": (lo, hi), "n": int(k.sum()),
                        "auc": {m: roc_auc(s[keep], yt[keep]) if k.any() else float("nan")
                                for m, s in scores.items()},
                        "gain": {m: float(np.median(g[k])) if k.any() else float("nan")
                                 for m, g in gain.items()}})

    res = {"roc_auc": auc["RNN"], "baseline_auc": auc["peak |band-passed|"],
           "notch_baseline_auc": auc["peak |band-passed + notched|"],
           "snr_gain_db": float(np.median(gain["RNN"])),
           "baseline_snr_gain_db": float(np.median(gain["band-pass + notch"])),
           "bandpass_snr_gain_db": float(np.median(gain["band-pass"])),
           "train_s": td.seconds + tc.seconds}
    print(f"{n_train + n_test} traces of {T} samples ({T / FS * 1e3:.0f} ns) simulated in "
          f"{tg.seconds:.1f} s; denoiser trained in {td.seconds:.1f} s, "
          f"detector in {tc.seconds:.1f} s")
    print(f"detection ROC AUC on {n_test} test traces: RNN {auc['RNN']:.3f}, "
          f"peak |band-passed| {res['baseline_auc']:.3f}, "
          f"peak |band-passed + RFI notch| {res['notch_baseline_auc']:.3f}")
    print(f"denoising SNR gain (median over {yt.sum()} pulses): RNN {res['snr_gain_db']:+.1f} dB, "
          f"band-pass + notch {res['baseline_snr_gain_db']:+.1f} dB, "
          f"band-pass {res['bandpass_snr_gain_db']:+.1f} dB")
    print("raw SNR bin     pulses   AUC RNN / band-pass / +notch    gain RNN / +notch (dB)")
    for b in per_bin:
        lo, hi = b["bin"]
        a, g = list(b["auc"].values()), b["gain"]
        print(f"  {lo:5.0f} .. {hi:<4.0f} dB {b['n']:6d}   {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f}"
              f"         {g['RNN']:+5.1f} / {g['band-pass + notch']:+5.1f}")

    def fig(plt):
        f, axs = plt.subplots(2, 2, figsize=(12, 8))
        pos = np.flatnonzero(yt)
        j = np.argmin(np.abs(snr_in_db - 8.0))               # a middling pulse
        i = pos[j]
        t_ns = np.arange(T) / FS * 1e3
        ax = axs[0, 0]
        ax.plot(t_ns, xt[i], color="0.6", lw=0.8, label="raw trace")
        ax.plot(t_ns, notched[i], "tab:blue", lw=0.9, label="band-pass + notch")
        ax.plot(t_ns, clean[i], "tab:red", lw=1.2, label="RNN denoised")
        ax.plot(t_ns, st[i], "k--", lw=1.0, label="true pulse")
        ax.set_xlabel("time (ns)")
        ax.set_ylabel("voltage / galactic RMS")
        ax.set_title(f"a test trace, raw SNR {snr_in_db[j]:.1f} dB")
        ax.legend(fontsize=7)
        ax = axs[0, 1]
        fq = np.fft.rfftfreq(2 * T, 1 / FS)
        ax.semilogy(fq, np.abs(np.fft.rfft(xt[i], 2 * T)) ** 2, color="0.6", lw=0.8, label="raw")
        ax.semilogy(fq, np.mean(np.abs(np.fft.rfft(xt, 2 * T)) ** 2, 0), "k", lw=1,
                    label="mean over test traces")
        ax.axvspan(F_LO, F_HI, color="tab:green", alpha=0.1, label="30-80 MHz band")
        ax.set_xlabel("frequency (MHz)")
        ax.set_ylabel("power")
        ax.set_title("spectrum: falling galactic noise + RFI lines")
        ax.legend(fontsize=7)
        ax = axs[1, 0]
        for name, s in scores.items():
            fpr, tpr = roc_curve(s, yt)
            ax.plot(fpr, tpr, label=f"{name} (AUC {auc[name]:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title("detection ROC")
        ax.legend(fontsize=7)
        ax = axs[1, 1]
        centres = np.arange(len(per_bin))
        labels = [f"<{b['bin'][1]:.0f}" if b["bin"][0] == -np.inf else
                  f">{b['bin'][0]:.0f}" if b["bin"][1] == np.inf else
                  f"{b['bin'][0]:.0f}-{b['bin'][1]:.0f}" for b in per_bin]
        for name in scores:
            ax.plot(centres, [b["auc"][name] for b in per_bin], "o-", label=f"AUC {name}")
        ax.set_xticks(centres, labels)
        ax.set_xlabel("raw-trace SNR (dB)")
        ax.set_ylabel("ROC AUC (bin's pulses vs all pulse-free traces)")
        ax2 = ax.twinx()
        for name, style in (("RNN", "r--"), ("band-pass + notch", "b--")):
            ax2.plot(centres, [b["gain"][name] for b in per_bin], style, label=f"gain {name}")
        ax2.set_ylabel("median denoising SNR gain (dB), dashed")
        ax.legend(fontsize=7, loc="lower right")
        ax2.legend(fontsize=7, loc="upper left")
        ax.set_title("per SNR bin")
        f.suptitle("Cosmic-ray radio pulses in galactic noise + RFI: GRU detector and denoiser")
        return f

    save_figure(fig, args.out, "cosmic_ray_radio.png")
    return res


if __name__ == "__main__":
    run(main)
