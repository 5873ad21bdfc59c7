"""Every augmentation by name: albumentations where it has the transform, OpenCV otherwise.

A transform is described by a name and parameters (plain data, so recipes can be written
in YAML/JSON); `build_transform` turns that into an albumentations transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

# --- transforms neither library ships ---------------------------------------------------

_MORPH_OPS = {
    "opening": cv2.MORPH_OPEN,
    "closing": cv2.MORPH_CLOSE,
    "gradient": cv2.MORPH_GRADIENT,
    "tophat": cv2.MORPH_TOPHAT,
    "blackhat": cv2.MORPH_BLACKHAT,
}


class MorphologyEx(A.ImageOnlyTransform):
    """OpenCV morphology beyond erosion/dilation.

    For top-hat and black-hat, `enhance` adds (top-hat) or subtracts (black-hat) the result
    from the photo, the usual contrast-enhancing use; `replace` returns the raw map.
    """

    def __init__(
        self, operation: str = "tophat", kernel: tuple[int, int] = (3, 9), mode: str = "enhance", p: float = 0.5
    ):
        super().__init__(p=p)
        if operation not in _MORPH_OPS:
            raise ValueError(f"unknown morphology '{operation}': choose from {sorted(_MORPH_OPS)}")
        self.operation, self.kernel, self.mode = operation, tuple(kernel), mode

    def get_params(self) -> dict:
        return {"size": self.py_random.randint(*self.kernel) | 1}  # odd kernel

    def apply(self, img: np.ndarray, size: int = 3, **params) -> np.ndarray:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        result = cv2.morphologyEx(img, _MORPH_OPS[self.operation], element)
        if self.mode == "enhance" and self.operation in ("tophat", "blackhat"):
            sign = 1 if self.operation == "tophat" else -1
            return np.clip(img.astype(np.int16) + sign * result.astype(np.int16), 0, 255).astype(np.uint8)
        return result

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("operation", "kernel", "mode")


class EdgeMap(A.ImageOnlyTransform):
    """Sobel gradient magnitude or Canny edges, blended with the photo (alpha=1: edges only)."""

    def __init__(self, method: str = "sobel", alpha: tuple[float, float] = (0.3, 0.7), p: float = 0.5):
        super().__init__(p=p)
        if method not in ("sobel", "canny"):
            raise ValueError(f"unknown edge method '{method}': choose sobel or canny")
        self.method, self.alpha = method, tuple(alpha)

    def get_params(self) -> dict:
        return {"alpha": self.py_random.uniform(*self.alpha)}

    def apply(self, img: np.ndarray, alpha: float = 0.5, **params) -> np.ndarray:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if self.method == "sobel":
            magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
            edges = cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        else:
            median = float(np.median(gray))
            edges = cv2.Canny(gray, int(max(0, 0.66 * median)), int(min(255, 1.33 * median) or 255))
        edges_rgb = cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB)
        return cv2.addWeighted(img, 1 - alpha, edges_rgb, alpha, 0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("method", "alpha")


class BilateralBlur(A.ImageOnlyTransform):
    """Edge-preserving blur (OpenCV bilateral filter)."""

    def __init__(self, diameter: tuple[int, int] = (5, 9), sigma: tuple[float, float] = (30, 90), p: float = 0.5):
        super().__init__(p=p)
        self.diameter, self.sigma = tuple(diameter), tuple(sigma)

    def get_params(self) -> dict:
        return {"d": self.py_random.randint(*self.diameter), "s": self.py_random.uniform(*self.sigma)}

    def apply(self, img: np.ndarray, d: int = 5, s: float = 50, **params) -> np.ndarray:
        return cv2.bilateralFilter(img, d, s, s)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("diameter", "sigma")


# --- the catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class TransformDef:
    group: str
    build: Callable[..., A.BasicTransform]
    defaults: dict
    about: str


def _crop(size: int = 256, scale=(0.5, 1.0), ratio=(0.75, 1.333), p: float = 1.0):
    return A.RandomResizedCrop(size=(size, size), scale=tuple(scale), ratio=tuple(ratio), p=p)


def _scale(scale_limit=(-0.3, 0.3), p: float = 1.0):
    return A.RandomScale(scale_limit=tuple(scale_limit), p=p)


def _pad(fraction=(0.05, 0.2), p: float = 1.0):
    # A random border as a fraction of the shorter side, like a photo framed with more context.
    return A.CropAndPad(percent=tuple(fraction), keep_size=False, border_mode=cv2.BORDER_REFLECT_101, p=p)


def _morph(operation: str, **defaults) -> TransformDef:
    about = {
        "opening": "erosion then dilation: removes small bright specks",
        "closing": "dilation then erosion: fills small dark gaps",
        "gradient": "dilation minus erosion: outlines",
        "tophat": "adds small bright details back on top (enhance) or shows them alone",
        "blackhat": "darkens small dark details (enhance) or shows them alone",
    }[operation]
    return TransformDef("morphology", lambda p=0.5, **kw: MorphologyEx(operation=operation, p=p, **kw), defaults, about)


TRANSFORMS: dict[str, TransformDef] = {
    # noise
    "gauss_noise": TransformDef("noise", A.GaussNoise, {"std_range": (0.03, 0.12)}, "additive gaussian sensor noise"),
    "salt_pepper": TransformDef("noise", A.SaltAndPepper, {"amount": (0.005, 0.03)}, "random white/black pixels"),
    "speckle_noise": TransformDef(
        "noise", A.MultiplicativeNoise, {"multiplier": (0.85, 1.15), "elementwise": True}, "multiplicative speckle"
    ),
    "iso_noise": TransformDef(
        "noise",
        A.ISONoise,
        {"color_shift": (0.01, 0.05), "intensity": (0.1, 0.5)},
        "camera ISO noise (colour + luminance)",
    ),
    # blur
    "box_blur": TransformDef("blur", A.Blur, {"blur_limit": (3, 7)}, "average (box) blur"),
    "median_blur": TransformDef("blur", A.MedianBlur, {"blur_limit": (3, 7)}, "median blur"),
    "gaussian_blur": TransformDef("blur", A.GaussianBlur, {"sigma_limit": (0.5, 2.0)}, "gaussian blur"),
    "bilateral_blur": TransformDef(
        "blur", BilateralBlur, {"diameter": (5, 9), "sigma": (30, 90)}, "edge-preserving bilateral blur"
    ),
    "motion_blur": TransformDef("blur", A.MotionBlur, {"blur_limit": (3, 9)}, "camera shake"),
    # morphology
    "erosion": TransformDef(
        "morphology", A.Morphological, {"scale": (2, 4), "operation": "erosion"}, "shrinks bright regions"
    ),
    "dilation": TransformDef(
        "morphology", A.Morphological, {"scale": (2, 4), "operation": "dilation"}, "grows bright regions"
    ),
    "opening": _morph("opening", kernel=(3, 7)),
    "closing": _morph("closing", kernel=(3, 7)),
    "morph_gradient": _morph("gradient", kernel=(3, 5), mode="replace"),
    "tophat": _morph("tophat", kernel=(7, 15)),
    "blackhat": _morph("blackhat", kernel=(7, 15)),
    # colour and light
    "saturation": TransformDef(
        "colour",
        A.HueSaturationValue,
        {"hue_shift_limit": 0, "sat_shift_limit": (-40, 40), "val_shift_limit": 0},
        "saturation",
    ),
    "hue": TransformDef(
        "colour",
        A.HueSaturationValue,
        {"hue_shift_limit": (-15, 15), "sat_shift_limit": 0, "val_shift_limit": 0},
        "hue shift",
    ),
    "brightness_contrast": TransformDef(
        "colour",
        A.RandomBrightnessContrast,
        {"brightness_limit": (-0.3, 0.3), "contrast_limit": (-0.3, 0.3)},
        "brightness and contrast",
    ),
    "gamma": TransformDef("colour", A.RandomGamma, {"gamma_limit": (60, 160)}, "gamma (exposure curve)"),
    "sharpen": TransformDef("colour", A.Sharpen, {"alpha": (0.2, 0.5)}, "unsharp masking"),
    "grayscale": TransformDef("colour", A.ToGray, {}, "black and white"),
    "clahe": TransformDef("colour", A.CLAHE, {"clip_limit": (1.0, 4.0)}, "local histogram equalisation"),
    "jpeg": TransformDef("colour", A.ImageCompression, {"quality_range": (30, 80)}, "JPEG compression artefacts"),
    "color_jitter": TransformDef(
        "colour",
        A.ColorJitter,
        {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05},
        "brightness, contrast, saturation and hue together",
    ),
    # geometry
    "random_crop": TransformDef("geometry", _crop, {"size": 256, "scale": (0.5, 1.0)}, "random resized crop"),
    "hflip": TransformDef("geometry", A.HorizontalFlip, {}, "mirror left-right"),
    "rotate": TransformDef(
        "geometry", A.Rotate, {"limit": (-15, 15), "border_mode": cv2.BORDER_REFLECT_101}, "small rotation"
    ),
    "perspective": TransformDef("geometry", A.Perspective, {"scale": (0.03, 0.1)}, "viewpoint change"),
    "scale": TransformDef("geometry", _scale, {"scale_limit": (-0.3, 0.3)}, "resize up or down"),
    "pad": TransformDef("geometry", _pad, {"fraction": (0.05, 0.2)}, "border around the photo"),
    "affine": TransformDef(
        "geometry",
        A.Affine,
        {"scale": (0.85, 1.15), "translate_percent": (-0.08, 0.08), "rotate": (-10, 10), "shear": (-8, 8)},
        "scale, shift, rotate and shear together",
    ),
    # structure
    "superpixels": TransformDef(
        "structure",
        A.Superpixels,
        {"p_replace": (0.1, 0.3), "n_segments": (100, 200)},
        "replaces regions by their mean colour",
    ),
    "sobel": TransformDef(
        "structure",
        lambda p=0.5, **kw: EdgeMap(method="sobel", p=p, **kw),
        {"alpha": (0.3, 0.7)},
        "Sobel gradient magnitude blended in",
    ),
    "canny": TransformDef(
        "structure",
        lambda p=0.5, **kw: EdgeMap(method="canny", p=p, **kw),
        {"alpha": (0.2, 0.5)},
        "Canny edges blended in",
    ),
    "emboss": TransformDef("structure", A.Emboss, {"alpha": (0.2, 0.5), "strength": (0.2, 0.7)}, "relief effect"),
    # occlusion and weather
    "coarse_dropout": TransformDef(
        "occlusion",
        A.CoarseDropout,
        {"num_holes_range": (1, 4), "hole_height_range": (0.05, 0.2), "hole_width_range": (0.05, 0.2)},
        "rectangles blanked out",
    ),
    "random_erasing": TransformDef(
        "occlusion", A.Erasing, {"scale": (0.02, 0.15), "fill": "random_uniform"}, "one rectangle filled with noise"
    ),
    "fog": TransformDef("occlusion", A.RandomFog, {"fog_coef_range": (0.2, 0.5)}, "fog"),
    "rain": TransformDef("occlusion", A.RandomRain, {"brightness_coefficient": 0.8}, "rain streaks"),
    "sun_flare": TransformDef("occlusion", A.RandomSunFlare, {"src_radius": 100}, "lens flare"),
    "shadow": TransformDef("occlusion", A.RandomShadow, {}, "cast shadows"),
    "snow": TransformDef("occlusion", A.RandomSnow, {"snow_point_range": (0.1, 0.3)}, "snow"),
}


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value


def build_transform(name: str, params: dict | None = None, p: float = 1.0) -> A.BasicTransform:
    """An albumentations transform from a catalogue name and parameter overrides."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform '{name}'; `compete augment --list` shows them all")
    definition = TRANSFORMS[name]
    merged = {**definition.defaults, **(params or {})}
    return definition.build(p=p, **{k: _as_tuple(v) for k, v in merged.items()})
