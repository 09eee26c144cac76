"""
Task arithmetic on a pretrained MNIST CNN: forget, add, merge
=============================================================

The experiment of Ilharco et al., "Editing Models with Task Arithmetic" (ICLR 2023), at the
size of a laptop: start from the pretrained MNIST CNN of :func:`weightspace.models.mnist_cnn`,
fine-tune copies of it on three digit tasks that it reads badly, take their task vectors
:math:`\\tau_t = \\theta_t - \\theta_0`, then

* **forget** one task by negation, :math:`\\theta_0 - \\lambda\\tau_t`, watching MNIST as a
  control task;
* **learn all three at once** by weight averaging, task arithmetic and TIES-merging.

This is a smaller copy of ``weightspace demo`` (four tasks, coefficients chosen on validation
images, a merged checkpoint written with provenance): run that for the full experiment.
Coefficients here are also chosen on validation images, never on the test images.
"""

import functools

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import weightspace as ws

base = ws.models.mnist_cnn()
prep = base.preprocess

# %%
# Three tasks, one label space
# ----------------------------
# All tasks are 10-way digit recognition, so the fine-tuned models share the 10-logit head
# and their task vectors live in one weight space. The inputs differ: digits at half size,
# digits at 30 % contrast, and scikit-learn's 8x8 digits upscaled to MNIST's 20x20 box.


def shrink(x):
    x = F.interpolate(x.float(), size=(14, 14), mode="bilinear", antialias=True)
    return F.pad(x, (7, 7, 7, 7)).round().clamp(0, 255).to(torch.uint8)


def fade(x):
    return (x.float() * 0.3 + 100).round().to(torch.uint8)


def upscale(x):
    x = F.interpolate(x.float(), size=(20, 20), mode="bilinear")
    return F.pad(x, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)


g = torch.Generator().manual_seed(0)
mnist_train, mnist_val, mnist_test = (ws.data.mnist(s) for s in ("train50k", "val10k", "test"))
digits_train, digits_test = ws.data.digits("train"), ws.data.digits("test")


def take(ds, n, transform):
    index = torch.randperm(len(ds), generator=g)[:n]
    return transform(ds.images[index]), ds.targets[index]


sizes = ((mnist_train, 4000), (mnist_val, 300), (mnist_test, 1000))
tasks = {
    "shrunk": [take(d, n, shrink) for d, n in sizes],
    "faded": [take(d, n, fade) for d, n in sizes],
}
# The digits' training images are split in two: 1,100 to fine-tune on, 338 to validate on.
order = torch.randperm(len(digits_train), generator=g)
fit, val = (digits_train.subset(indices=order[:1100]), digits_train.subset(indices=order[1100:]))
tasks["digits"] = [
    take(fit, 1100, upscale),
    take(val, 338, upscale),
    take(digits_test, 359, upscale),
]
control_val = take(mnist_val, 300, lambda x: x)
control_test = take(mnist_test, 1000, lambda x: x)


def scored(name, val, test):
    """The task, scored by the accuracy of the MNIST CNN at a given state dict."""
    return ws.arithmetic.Task.from_classifier(
        name, base, validation=(prep(val[0]), val[1]), test=(prep(test[0]), test[1])
    )


scores = {name: scored(name, val, test) for name, (_, val, test) in tasks.items()}
scores["mnist"] = scored("mnist", control_val, control_test)

# %%
# Fine-tuning and task vectors
# ----------------------------
# 50 SGD steps per task on seeded batches (:class:`weightspace.train.Trainer`);
# :meth:`weightspace.TaskVector.from_models` gives the task vector.


def fine_tune(x, y, steps=50, seed=0):
    model = ws.models.mnist_cnn().train()
    trainer = ws.train.Trainer(model, optimizer="sgd", lr=0.01, momentum=0.9, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(y), (32,), generator=gen)
        trainer.step(trainer.compute_loss((prep(x[i]), y[i])))
    return model.eval()


vectors = {}
for k, (name, (train, _val, _test)) in enumerate(tasks.items()):
    model = fine_tune(*train, seed=k)
    vectors[name] = ws.TaskVector.from_models(base=base, finetuned=model).materialize()

# %%
# Forgetting by negation
# ----------------------
# Subtracting the ``digits`` vector lowers accuracy on the 8x8 digits. MNIST is a control:
# :func:`weightspace.arithmetic.forget` keeps the :math:`\lambda` with the lowest digits
# accuracy among those whose control validation accuracy stays at 95 % of the pretrained
# model's (Ilharco et al.'s rule; all on validation images, the test images are reported).

lambdas = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5)
forgotten = ws.arithmetic.forget(
    base,
    vectors["digits"],
    target=scores["digits"],
    control=scores["mnist"],
    grid=lambdas,
    random_baseline=False,
)
print(ws.arithmetic.table([forgotten]))

# %%
# Learning all three at once
# --------------------------
# :func:`weightspace.arithmetic.add` picks the scale of task arithmetic and of TIES on
# validation images (mean normalised accuracy); averaging has none.

methods = {
    "averaging": ws.arithmetic.Method(ws.merge.mean, grid=(1.0,)),
    "task arithmetic": ws.arithmetic.Method(
        ws.merge.task_arithmetic, grid=(0.2, 0.3, 0.4, 0.6, 0.8)
    ),
    "TIES": ws.arithmetic.Method(
        functools.partial(ws.merge.ties, density=0.2), grid=(0.4, 0.6, 0.8, 1.0, 1.2)
    ),
}
added = ws.arithmetic.add(base, vectors, {n: scores[n] for n in tasks}, methods=methods)
print(ws.arithmetic.table([added]))
normalised = {m: [added.rows[m].normalized[n] for n in tasks] for m in methods}

# %%
# The picture
# -----------
# Left: normalised test accuracy (merged / fine-tuned) per task. Right: the negation
# trade-off on validation images, one point per :math:`\lambda`.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[1.5, 1])
width = 0.8 / len(normalised)
for i, (label, values) in enumerate(normalised.items()):
    xs = [j + (i - 1) * width for j in range(len(tasks))]
    ax1.bar(xs, [100 * v for v in values], width, label=label)
ax1.axhline(100, color="black", linestyle="--", linewidth=0.8)
ax1.set_xticks(range(len(tasks)), list(tasks))
ax1.set_ylabel("normalised test accuracy (%)")
ax1.legend(loc="lower right", fontsize=8)
control = [100 * c["mnist"] for _, _, c in forgotten.curve]
target = [100 * t for _, t, _ in forgotten.curve]
ax2.plot(control, target, marker="o")
for lam, c, t in zip(lambdas, control, target, strict=True):
    ax2.annotate(f"{lam:g}", (c, t), xytext=(4, 4), textcoords="offset points")
ax2.axvline(0.95 * control[0], color="grey", linestyle=":")
ax2.set_xlabel("control (MNIST) validation accuracy %")
ax2.set_ylabel("digits validation accuracy %")
ax2.set_title("forgetting by negation")
fig.tight_layout()
plt.show()
