"""The embedded phantom: synthetic frontal CXRs with a switchable source confound.

Each image has a body outline, two lungs with exact ground-truth masks, ribs,
heart, spine and diaphragm shadows. Disease opacities are placed **only inside
the lungs** (multiplied by the lung mask); each source (hospital) leaves its
signature **only outside the lungs**:

- a burn-in text block in a top corner and a laterality marker in a bottom
  corner. Every hospital stamps the same area at the same brightness; only the
  corners differ, so a CNN can find the hospital while an intensity histogram
  cannot;
- a global intensity style (gamma, noise level, collimation border) whose
  strength is ``signature`` in [0, 1]. At the default 0.1 a logistic regression
  on a 32-bin histogram plus mean and sd of the ``lungs_removed`` image reaches
  test AUROC 0.49-0.61 on confounded phantoms (0.84-0.94 at 1; on the
  previous phantom one number, the pixel sd, solved the confound).

Exposure (a whole-image gamma) and dose (the noise scale) vary from image to
image independently of source and label, as in real collections. Two sources
store 12-bit DICOM, which the reader scales per image (min to max); every image
holds a white marker with a black core, so that scaling leaves it as rendered.

``confound`` in [0, 1] is the probability that a patient's source is its
class's home source (1 = each class from its own source, as in COVIDx; 0 =
source independent of label). Under confound 1 the hospital *is* the label, so
a plain source probe is a disease probe; the within-label source probe
(``cxrray.explain.probe``) asks whether the hospital itself shows.
Everything is deterministic from ``seed``; patient ``i`` depends only on
``(seed, i)``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrray.data.images import write_dicom
from cxrray.data.manifest import LABELS, REQUIRED_COLUMNS
from cxrray.registry import UserError

LUNG_NOISE = 0.03  # the one noise level inside the lungs, whatever the source
EXPOSURE_SD = 0.2  # log-sd of each image's exposure gamma and of its noise (dose) scale
SIGNATURE = 0.1  # default strength of the global intensity style (0: sources differ only by stamp places)


@dataclass(frozen=True)
class SourceStyle:
    """How one hospital's images look outside the lungs."""

    name: str
    text_corner: str  # "left" | "right": burn-in block in the top rows
    marker_corner: str  # "left" | "right": laterality marker in the bottom rows
    border: float  # collimation border width, fraction of the image side
    gamma: float
    noise: float
    fmt: str  # "png" | "dcm1" (DICOM MONOCHROME1) | "dcm2" (DICOM MONOCHROME2)

    def at_strength(self, strength: float) -> SourceStyle:
        """This style with its global intensity traits moved toward a neutral scanner by ``1 - strength``:
        gamma toward 1, noise toward the lungs' level, the collimation border toward none. The burn-in text
        and the marker keep their places and brightness: every source stamps the same area, so they tell
        sources apart only by *where* they are, which a CNN sees and an intensity histogram does not."""
        s = float(strength)
        return SourceStyle(self.name, self.text_corner, self.marker_corner, s * self.border,
                           1 + s * (self.gamma - 1), LUNG_NOISE + s * (self.noise - LUNG_NOISE), self.fmt)


SOURCES: tuple[SourceStyle, ...] = (
    SourceStyle("hosp_a", "left", "right", 0.00, 1.00, 0.010, "png"),
    SourceStyle("hosp_b", "right", "left", 0.06, 0.80, 0.030, "dcm1"),
    SourceStyle("hosp_c", "right", "right", 0.03, 1.25, 0.020, "png"),
    SourceStyle("hosp_d", "left", "left", 0.09, 0.90, 0.040, "dcm2"),
)
HOME_SOURCE = {"NOR": 0, "CVP": 1, "OVP": 2, "OBP": 3}
SEVERITY_LEVELS = {
    "NOR": (("none",), (1.0,)),
    "CVP": (("Normal-PCR+", "Mild", "Moderate", "Severe"), (0.15, 0.25, 0.40, 0.20)),
    "OVP": (("Mild", "Moderate", "Severe"), (0.3, 0.45, 0.25)),
    "OBP": (("Mild", "Moderate", "Severe"), (0.3, 0.45, 0.25)),
}
SEVERITY_AMPLITUDE = {"none": 0.0, "Normal-PCR+": 0.0, "Mild": 0.55, "Moderate": 1.0, "Severe": 1.5}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, s: float) -> np.ndarray:
    return np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))


def _disease(label: str, amp: float, yy, xx, lungs, rng: np.random.Generator) -> np.ndarray:
    """Opacity pattern of a label (before masking): each label has its own look."""
    out = np.zeros_like(yy)
    if amp == 0.0:
        return out
    if label == "CVP":  # bilateral, peripheral, lower-zone ground glass
        for cx in (lungs[0][1] - 0.06, lungs[1][1] + 0.06):
            for _ in range(3):
                out += 0.22 * _blob(yy, xx, rng.uniform(0.45, 0.62), cx + rng.normal(0, 0.02), 0.05)
    elif label == "OBP":  # one dense lobar consolidation
        cy, cx, *_ = lungs[rng.integers(2)]
        out += 0.40 * _blob(yy, xx, cy + rng.uniform(-0.05, 0.12), cx + rng.normal(0, 0.02), 0.07)
    elif label == "OVP":  # diffuse perihilar interstitial pattern
        for cy, cx, *_ in lungs:
            for _ in range(8):
                out += 0.12 * _blob(yy, xx, cy + rng.normal(0, 0.08), (cx + 0.5) / 2 + rng.normal(0, 0.04), 0.025)
    return amp * out


def render(label: str, severity: str, style: SourceStyle, rng: np.random.Generator,
           size: int = 256, anatomy: dict | None = None, breast: float = 0.0,
           disease_scale: float = 1.0, spine: float = 0.0, extra=None) -> tuple[np.ndarray, np.ndarray]:
    """One phantom image (float32 [0, 1]) and its exact lung mask (uint8 {0, 1}). ``breast``: strength of a
    soft-tissue shadow over the lower chest, outside the lungs (a sex signature); ``disease_scale``: the disease
    opacities' contrast (below 1: fainter in this patient's subgroup); ``spine``: added to the spine's
    brightness, outside the lungs (an age signature); ``extra(img, lung, body, yy, xx)``: draws
    more (a finding, a device) before the source's stamps, gamma and noise."""
    a = anatomy or {}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    dy, dx = a.get("shift", (0.0, 0.0))
    yy, xx = yy - dy, xx - dx
    scale = a.get("scale", 1.0)
    img = np.full((size, size), 0.04)
    body = _ellipse(yy, xx, 0.58, 0.5, 0.58, 0.44 * scale)
    img[body] = 0.45
    lungs = [(0.44, 0.5 - 0.17 * scale, 0.24, 0.12 * scale), (0.44, 0.5 + 0.17 * scale, 0.24, 0.12 * scale)]
    lung = np.zeros_like(img, dtype=bool)
    for cy, cx, ry, rx in lungs:
        lung |= _ellipse(yy, xx, cy, cx, ry, rx)
    heart = _ellipse(yy, xx, 0.6, 0.54, 0.12, 0.13 * scale)
    lung &= ~heart
    img[lung] = 0.16
    img[heart & body] = 0.55
    img[(np.abs(xx - 0.5) < 0.025) & body] = 0.62 + spine  # spine / mediastinum
    img[(yy > 0.68) & body & ~lung] = np.maximum(img[(yy > 0.68) & body & ~lung], 0.58)  # diaphragm
    for k in range(8):  # ribs: curved bands over the thorax
        band = np.abs(yy - (0.2 + 0.065 * k) - 0.25 * (xx - 0.5) ** 2) < 0.012
        img[band & body & (yy < 0.72)] += 0.08
    # Separate streams, so that the disease draws never change the noise outside the lungs.
    rng_disease, rng_noise, rng_exposure = rng.spawn(3)
    img += _disease(label, SEVERITY_AMPLITUDE[severity] * disease_scale, yy, xx, lungs, rng_disease) * lung
    if breast:  # two soft-tissue shadows low on the chest wall, never over the lungs
        shadow = (_ellipse(yy, xx, 0.74, 0.5 - 0.2 * scale, 0.1, 0.13 * scale)
                  | _ellipse(yy, xx, 0.74, 0.5 + 0.2 * scale, 0.1, 0.13 * scale))
        img[shadow & body & ~lung] += 0.15 * breast
    if extra is not None:
        extra(img, lung, body, yy, xx)
    _stamp_source(img, style, lung)
    img = np.clip(img, 0, 1)
    img = np.where(lung, img, img ** style.gamma)  # the source's gamma and noise stay outside the lungs
    # Exposure and dose vary from image to image in every hospital, as in real collections: a whole-image
    # gamma and a noise scale independent of source and label, so global intensity statistics are noisy.
    exposure, dose = np.exp(rng_exposure.normal(0.0, EXPOSURE_SD, 2))
    sigma = np.where(lung, LUNG_NOISE, style.noise) * dose
    img = np.clip(img ** exposure + rng_noise.normal(0, 1.0, img.shape) * sigma, 0, 1)
    return img.astype(np.float32), lung.astype(np.uint8)


def _stamp_source(img: np.ndarray, style: SourceStyle, lung: np.ndarray) -> None:
    """Source signature, all of it outside the lung fields. Every source stamps the same area of text and
    marker at the same brightness; only their places differ. Places and sizes are whole multiples of
    1/64 of the side, mirrored exactly, so a left and a right stamp blur alike when the image is resized."""
    n = img.shape[0]
    u = max(1, n // 64)
    b = u * round(style.border * n / u)
    if b:  # collimation border
        img[:b, :] = img[-b:, :] = 0.0
        img[:, :b] = img[:, -b:] = 0.0
    stamp = np.zeros_like(img)

    def place(corner: str, width: int, inset: int) -> int:
        return b + inset if corner == "left" else n - b - inset - width

    h, w = 4 * u, 19 * u  # burn-in text: a striped block near the top edge
    x0, y0 = place(style.text_corner, w, 2 * u), b + u
    stamp[y0:y0 + h, x0:x0 + w][:, (np.arange(w) // u) % 3 != 2] = 0.9
    m = 5 * u  # laterality marker: a white square with a black core, bottom corner
    x0, y0 = place(style.marker_corner, m, 3 * u), n - b - 2 * u - m
    stamp[y0:y0 + m, x0:x0 + m] = 1.0  # white and black: every image spans the full range, so a reader's
    core = np.zeros_like(img, dtype=bool)  # per-image min-max scaling (DICOM) leaves it as rendered
    core[y0 + 2 * u:y0 + 3 * u, x0 + 2 * u:x0 + 3 * u] = True
    shown = (stamp > 0) & ~lung
    img[shown] = stamp[shown]
    img[core & ~lung] = 0.0


def _write_image(img: np.ndarray, path: Path, fmt: str, patient_id: str, uid_seed: str) -> None:
    if fmt == "png":
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
        return
    stored = (4095 * (1 - img if fmt == "dcm1" else img)).round().astype(np.uint16)
    write_dicom(path, stored, photometric="MONOCHROME1" if fmt == "dcm1" else "MONOCHROME2", bits_stored=12,
                uid_seed=uid_seed, PatientID=patient_id)


def phantom_dir(out_dir: str | Path) -> Path:
    """A phantom's folder, with its ``images/`` and ``masks/``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    return out


def save_image(out: Path, stem: str, img: np.ndarray, mask: np.ndarray, style: SourceStyle, patient_id: str,
               uid_seed: str) -> dict[str, str]:
    """Write one image in its source's format (PNG or DICOM) and its mask; their manifest paths."""
    ext = "png" if style.fmt == "png" else "dcm"
    _write_image(img, out / "images" / f"{stem}.{ext}", style.fmt, patient_id, uid_seed)
    Image.fromarray(mask * 255).save(out / "masks" / f"{stem}.png")
    return {"image_path": f"images/{stem}.{ext}", "mask_path": f"masks/{stem}.png"}


def write_manifest(out: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    """``out/manifest.csv`` of the rows (paths relative to it)."""
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return manifest


def write_phantom(out_dir: str | Path, *, n_patients: int = 160, images_per_patient: tuple[int, int] = (1, 3),
                  confound: float = 1.0, seed: int = 0, size: int = 256, signature: float = SIGNATURE,
                  label_probs: tuple[float, ...] = (0.3, 0.3, 0.2, 0.2), min_per_label: int = 0,
                  sex_signature: float = 0.0, female_gap: float = 0.0, age_signature: float = 0.0,
                  female_rarity: float = 0.0) -> Path:
    """Write images, masks and ``manifest.csv`` under ``out_dir``; return the manifest path.

    Demographic effects, off by default (every other phantom exactly as before), to validate the subgroup and
    demographic analyses: ``sex_signature`` in [0, 1], a soft-tissue shadow over the lower chest of female
    patients, outside the lungs (sex readable with the lungs removed); ``female_gap`` in [0, 1], the disease
    opacities of female patients that much fainter (a model is worse for them: a planted subgroup gap);
    ``age_signature`` in [0, 1], a spine that brightens with age (up to +0.3 at 90 years, outside the lungs);
    ``female_rarity`` in [0, 1], that share of the female COVID-19 patients drawn normal instead (COVID-19 rarer in
    women: sex predicts the label, a shortcut open to a model that reads sex; shortcut testing's known answer).

    ``min_per_label``: every label with a non-zero probability gets at least this many patients (taken from the
    most frequent label's last patients), so that a small phantom of a rare class still has that class in every
    split; 0 keeps the drawn labels (and every other phantom exactly as before)."""
    if not 0.0 <= confound <= 1.0:
        raise UserError(f"confound must be in [0, 1], got {confound}")
    for name, value in (("signature", signature), ("sex_signature", sex_signature), ("female_gap", female_gap),
                        ("age_signature", age_signature), ("female_rarity", female_rarity)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {value}")
    out = phantom_dir(out_dir)
    label_p = np.asarray(label_probs) / sum(label_probs)
    labels = [LABELS[np.random.default_rng([seed, p]).choice(len(LABELS), p=label_p)] for p in range(n_patients)]
    for k in map(int, np.flatnonzero(label_p)):
        while labels.count(LABELS[k]) < min_per_label:
            common = max(LABELS, key=labels.count)
            labels[len(labels) - 1 - labels[::-1].index(common)] = LABELS[k]
    rows = []
    for p in range(n_patients):
        rng = np.random.default_rng([seed, p])
        rng.choice(len(LABELS), p=label_p)  # the draw above: every later draw of the patient stays the same
        label = labels[p]
        home, other = rng.random(), int(rng.integers(len(SOURCES)))  # both drawn: every confound gets the
        src_i = HOME_SOURCE[label] if home < confound else other  # same patients, only their sources differ
        style = SOURCES[src_i].at_strength(signature)
        pid = f"ph{seed}-{p:05d}"
        sex, age = ("M", "F")[rng.integers(2)], int(rng.integers(18, 90))
        if sex == "F" and label == "CVP" and np.random.default_rng([seed, p, 1]).random() < female_rarity:
            label = "NOR"  # its own draw: every other patient, and every phantom without it, stays the same
        levels, probs = SEVERITY_LEVELS[label]
        severity = levels[rng.choice(len(levels), p=probs)]
        scale = rng.normal(1.0, 0.05)
        for k in range(int(rng.integers(images_per_patient[0], images_per_patient[1] + 1))):
            anatomy = {"scale": scale, "shift": tuple(rng.normal(0, 0.015, 2))}
            female = sex == "F"
            img, mask = render(label, severity, style, rng, size=size, anatomy=anatomy,
                               breast=sex_signature * female, disease_scale=1.0 - female_gap * female,
                               spine=0.3 * age_signature * (age - 18) / 72)
            stem = f"{pid}_{k}"
            rows.append(save_image(out, stem, img, mask, style, pid, f"{seed}-{stem}") | {
                "patient_id": pid, "source": style.name, "label": label, "severity": severity, "view": "PA",
                "sex": sex, "age": str(age)})
    return write_manifest(out, rows, list(REQUIRED_COLUMNS))
