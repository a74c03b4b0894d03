"""Price forecasting from the past 60 days: LSTM vs AR(p) vs "tomorrow = today".

Default data: a simulated geometric Brownian motion (daily closes, 20% volatility). With
``--csv file --column Close`` any daily price series is used instead. The models see the
past 60 daily log returns and predict the next one; the forecast price is today's price times
exp(predicted return). Metric: RMSE of next-day price on the last 20% of the days.

For a GBM the returns are independent, so "tomorrow = today" is (up to the small drift) the
best possible forecast -- the lectures' caution that an RNN cannot beat a random walk.

    python examples/price_forecast.py [--quick] [--csv prices.csv --column Close] [--out plot.png]
"""
import numpy as np

import fastrnn as fr
from fastrnn.datasets import gbm_prices, read_csv_column, windows
from fastrnn.lore import AR

from _common import Timer, parser, run, save_figure

WINDOW = 60


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--csv", help="CSV file with a header row")
    p.add_argument("--column", default=None, help="price column (default: last numeric column)")
    p.add_argument("--p", type=int, default=5, help="order of the AR baseline")
    args = p.parse_args(argv)
    quick = args.quick
    if args.csv:
        try:
            prices = read_csv_column(args.csv, args.column)
        except (OSError, ValueError) as e:
            p.error(str(e))
        if (prices <= 0).any():
            p.error("prices must be positive (log returns are used)")
        source = f"{args.csv}:{args.column or 'last numeric column'}"
    else:
        prices = gbm_prices(600 if quick else 3000, seed=args.seed)
        source = "simulated GBM"
    window = 20 if quick else WINDOW
    r = np.diff(np.log(prices))
    if len(r) < 2 * window + 10:
        p.error(f"{len(prices)} prices are too few for {window}-day windows")
    X, y = windows(r, window, 1)                     # X (N, window, 1), y (N, 1, 1): next return
    last = prices[window:-1]                         # today's price for each window
    nxt = prices[window + 1:]                        # tomorrow's price (the target)
    split = int(0.8 * len(X))
    sd = r[:split + window].std()
    Xn, yn = (X / sd).astype(np.float32), (y[:, 0] / sd).astype(np.float32)

    model = fr.Sequential([fr.Recurrent(fr.LSTM(1, 8 if quick else 32), return_sequences=False),
                           fr.Dense(1)], seed=args.seed)
    model.compile(loss="mse", optimizer=fr.Adam(1e-3))
    with Timer() as t:
        model.fit(Xn[:split], yn[:split], epochs=2 if quick else 15, batch_size=64,
                  validation_split=0.1, verbose=0,
                  callbacks=[fr.EarlyStopping(patience=3, restore_best_weights=True)])
    rnn_price = last[split:] * np.exp(model.predict(Xn[split:])[:, 0] * sd)

    ar = AR(args.p).fit(r[:split + window])
    ar_price = last[split:] * np.exp(ar.predict(X[split:, :, 0]))
    naive = last[split:]
    truth = nxt[split:]

    def rmse(a):
        return float(np.sqrt(np.mean((a - truth) ** 2)))

    res = {"lstm_rmse": rmse(rnn_price), "ar_rmse": rmse(ar_price), "naive_rmse": rmse(naive),
           "train_s": t.seconds, "test_days": int(len(truth))}
    print(f"data: {source}, {len(prices)} days; test on the last {len(truth)} next-day forecasts")
    print(f"next-day price RMSE   LSTM {res['lstm_rmse']:.4f}   AR({args.p}) {res['ar_rmse']:.4f}   "
          f"tomorrow=today {res['naive_rmse']:.4f}   (LSTM trained in {t.seconds:.1f} s)")

    def fig(plt):
        f, ax = plt.subplots(figsize=(10, 4))
        d = np.arange(len(truth))[-120:]
        ax.plot(d, truth[-120:], "k", label="price")
        ax.plot(d, rnn_price[-120:], label="LSTM")
        ax.plot(d, ar_price[-120:], label=f"AR({args.p})")
        ax.plot(d, naive[-120:], ":", label="tomorrow = today")
        ax.set_xlabel("test day")
        ax.set_title(f"Next-day forecasts ({source})")
        ax.legend()
        return f

    save_figure(fig, args.out, "price_forecast.png")
    return res


if __name__ == "__main__":
    run(main)
