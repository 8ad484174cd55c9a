r"""Fig. 4: normalised counts of valid weights of a 3 x 3 filter on a 65 x 65 map vs. the atrous rate.

Prints the table and draws the plot as a PNG (Pillow only):

    python -m experiments.fig4_valid_weights --output=fig4_valid_weights.png

Expected, as the paper says: at small rates all 9 weights are valid almost everywhere; the 9-valid
count falls to 0 past rate 32, and from rate 65 on only the centre weight (1 valid) is left.
"""

from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from deeplab_tf.evaluation.valid_weights import valid_weight_counts

_FEATURE_SIZE = flags.DEFINE_integer("feature_size", 65, "Side of the square feature map.")
_KERNEL_SIZE = flags.DEFINE_integer("kernel_size", 3, "Side of the square atrous filter (odd).")
_MAX_RATE = flags.DEFINE_integer("max_rate", 70, "Largest atrous rate; rates run from 1.")
_CURVES = flags.DEFINE_list("curves", ["1", "4", "9"], "Numbers of valid weights to plot.")
_OUTPUT = flags.DEFINE_string("output", "fig4_valid_weights.png", "Path of the PNG plot.")

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def format_table(rates, counts):
    """One row per rate, one column per number of valid weights that occurs at some rate."""
    columns = [v for v in range(counts.shape[1]) if counts[:, v].any()]
    lines = ["rate  " + "".join(f"{f'{v} valid':>10}" for v in columns)]
    for rate, row in zip(rates, counts):
        lines.append(f"{rate:>4}  " + "".join(f"{row[v]:>10.4f}" for v in columns))
    return "\n".join(lines)


def draw_plot(rates, counts, *, curves, title, size=(900, 540)):
    """A line plot of counts[:, v] against the rate for each v in `curves`, with axes and legend."""
    width, height = size
    left, right, top, bottom = 90, 190, 60, 70  # margins around the plot area
    font, small = ImageFont.load_default(size=18), ImageFont.load_default(size=15)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x_max = max(rates)

    def point(rate, value):
        x = left + rate / x_max * (width - left - right)
        return x, height - bottom - value * (height - top - bottom)

    for tick in range(0, 6):  # y: 0, 0.2, ..., 1 with grid lines
        value = tick / 5
        x0, y = point(0, value)
        draw.line([(x0, y), (point(x_max, value)[0], y)], fill=(225, 225, 225))
        draw.text((x0 - 8, y), f"{value:.1f}", fill="black", font=small, anchor="rm")
    step = 10 if x_max > 20 else 2
    for rate in range(0, x_max + 1, step):  # x ticks
        x, y0 = point(rate, 0)
        draw.line([(x, y0), (x, y0 + 6)], fill="black")
        draw.text((x, y0 + 10), str(rate), fill="black", font=small, anchor="mt")
    draw.rectangle([point(0, 1), point(x_max, 0)], outline="black")

    for color, valid in zip(_COLORS, curves):
        draw.line([point(rate, value) for rate, value in zip(rates, counts[:, valid])], fill=color, width=3,
                  joint="curve")

    draw.text((width / 2 - (right - left) / 2, top / 2), title, fill="black", font=font, anchor="mm")
    draw.text((point(x_max / 2, 0)[0], height - 22), "atrous rate", fill="black", font=font, anchor="mm")
    y_label = Image.new("RGB", (300, 30), "white")
    ImageDraw.Draw(y_label).text((150, 15), "normalized count", fill="black", font=font, anchor="mm")
    y_label = y_label.rotate(90, expand=True)
    image.paste(y_label, (12, int(point(0, 0.5)[1]) - y_label.height // 2))

    legend_x, legend_y = width - right + 20, top + 10
    for index, (color, valid) in enumerate(zip(_COLORS, curves)):
        y = legend_y + 28 * index
        draw.line([(legend_x, y), (legend_x + 30, y)], fill=color, width=3)
        draw.text((legend_x + 38, y), f"{valid} valid weight{'s' if valid != 1 else ''}", fill="black",
                  font=small, anchor="lm")
    return image


def main(argv):
    del argv
    rates = list(range(1, _MAX_RATE.value + 1))
    counts = valid_weight_counts(
        feature_size=_FEATURE_SIZE.value, kernel_size=_KERNEL_SIZE.value, rates=rates)
    curves = [int(v) for v in _CURVES.value]
    if any(not 0 <= v < counts.shape[1] for v in curves):
        raise app.UsageError(f"--curves must be numbers of valid weights in 0..{counts.shape[1] - 1}.")
    print(format_table(rates, counts))
    k, n = _KERNEL_SIZE.value, _FEATURE_SIZE.value
    title = f"Valid weights of a {k}x{k} filter on a {n}x{n} feature map"
    draw_plot(rates, counts, curves=curves, title=title).save(_OUTPUT.value)
    print(f"Plot written to {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
