"""`passkit validate`: pretrain a reference recipe on a release and check that it learned.

    result = validate("releases/demo-1.0.0", recipe="moco_v2", preset="smoke", eval_spec="synthetic")

Recipes: those in passkit.recipes.registry's table (each preset's settings in the recipe's module,
see passkit.recipes.presets).

Writes into the release folder `validation/<recipe>-<preset>-seed<seed>/` with validation.json,
metrics.jsonl, similarity.jsonl and plots (loss.png, similarity.png, knn.png), and appends a
validation entry to manifest.json (audit checks only the files the manifest lists, so this does
not disturb it). The checkpoint goes to `work_dir`, not into the release.

GenView (moco_v2 only): `genview=DERIVED` pairs each sample with its generated variation in the
derived release (passkit.stream.pairs; one view from the variation with probability `genview_prob`),
and `quality_loss=True` weights the InfoNCE terms by pair quality (passkit.recipes.quality), scored by
`quality_scorer` ("momentum", the default, or "open_clip:ARCH:WEIGHTS_FILE"). A frozen scorer's foreground
direction is fitted on up to quality.PCA_IMAGES release images before training and written beside the
checkpoint (`quality_pca.json`; a resumed run with the same scorer, weights and release reads it instead
of fitting again); the momentum scorer refits its own during training. The direction the run ended with
is written to the validation folder (`quality_pca.json`) and named in the entry. All of it is recorded in
the entry's settings and names the run's folder (`<recipe>-genview-quality-<preset>-...`), so a plain
run of the same preset is not overwritten.

Checks (each pass / fail / skipped):
- loss: the final loss is below `loss_ratio` x the recipe's chance loss, the loss of a network that
  learned nothing: ln(K+1) for MoCo (K negatives), ln(prototypes) for SwAV, ln(out_dim) for DINO.
  MAE's loss has no chance level: its check is the masked-patch reconstruction error on release
  images, which must fall below `loss_ratio` x that of the same network at random init;
- rankme: the effective rank of the backbone's features of release images is above the preset's
  floor (collapse gives ~1);
- knn: with a labelled set (--eval), kNN top-1 (k=20, T=0.07) beats the same network at random
  init by the preset's margin. MAE features are not built for kNN (MAE is judged by linear
  probing), so for MAE this check is the linear probe's accuracy instead.

Presets too short to show learning (smoke: `Preset.judge_learning` false) check the plumbing:
the loss and the kNN / probe accuracy must be finite numbers, and RankMe still fails a collapsed
network; each check's rule says which it proves.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from passkit.recipes import evaluate as ev
from passkit.recipes import plots, presets, registry
from passkit.recipes.augment import MultiView, eval_transform, moco_v2_augment, normalize
from passkit.recipes.engine import DistInfo, ReleaseData, TrainConfig, Trainer, pick_device, seed_everything
from passkit.recipes.inputs import resolve_loader

RELEASE_EMBED_MAX = 512


@dataclass(slots=True)
class ValidationResult:
    ok: bool
    entry: dict[str, Any]  # what validation.json holds (and, shortened, the manifest entry)
    out_dir: Path


def _release_images(release_dir: Path, size: int, seed: int) -> torch.Tensor:
    """Up to 64 release images at `size`, normalised: the fixed set MAE's reconstruction is scored on."""
    from passkit.stream import loader

    for (plain,), _ in loader(release_dir, 64, transform=MultiView([eval_transform(size)]), shuffle=True, seed=seed):
        return normalize(plain)
    raise ValueError(f"{release_dir} has no samples")


def _release_embeddings(recipe: Any, model: torch.nn.Module, release_dir: Path, size: int,
                        device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Backbone features of (up to 512) release images, and projected embeddings of two views."""
    from passkit.stream import loader

    aug = moco_v2_augment(size)
    dl = loader(release_dir, 64, transform=MultiView([eval_transform(size), aug, aug]), shuffle=True, seed=seed)
    feats, z1, z2 = [], [], []
    model.eval()
    with torch.no_grad():
        n = 0
        for (plain, a, b), _ in dl:
            feats.append(recipe.features(model, normalize(plain.to(device))).float().cpu())
            z1.append(recipe.embed(model, normalize(a.to(device))).float().cpu())
            z2.append(recipe.embed(model, normalize(b.to(device))).float().cpu())
            n += len(plain)
            if n >= RELEASE_EMBED_MAX:
                break
    return {"features": torch.cat(feats), "z1": torch.cat(z1), "z2": torch.cat(z2)}


def _embed_metrics(e: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {"rankme": ev.rankme(e["features"]), "alignment": ev.alignment(e["z1"], e["z2"])}
    out["uniformity"] = ev.uniformity(e["z1"]) if len(e["z1"]) > 1 else float("nan")
    return out


def validate(
    release_dir: Path | str,
    *,
    recipe: str = "moco_v2",
    preset: str = "smoke",
    eval_spec: str | None = None,
    seed: int = 0,
    device: str = "auto",
    work_dir: Path | None = None,
    steps: int | None = None,
    progress: bool = True,
    update_manifest: bool = True,
    loader: str = "auto",
    genview: Path | str | None = None,
    genview_prob: float = 1.0,
    quality_loss: bool = False,
    quality_gamma: float | None = None,
    quality_scorer: str | None = None,
) -> ValidationResult:
    from passkit.release.manifest import add_validation
    from passkit.stream import open_release

    probe = registry.entry(recipe).probe  # ValueError for an unknown recipe, before any work
    if (genview is not None or quality_loss) and recipe != "moco_v2":
        raise ValueError(f"--genview and --quality-loss are options of the moco_v2 recipe, not {recipe}")
    if quality_scorer is not None and not quality_loss:
        raise ValueError("--quality-scorer chooses the network of --quality-loss; add --quality-loss")
    if genview is not None and loader == "auto":
        loader = "cpu"  # pairing needs each view decoded from its own image: the cpu input path
    input_mode = resolve_loader(loader, pick_device(device, DistInfo()))  # before any work, too
    if genview is not None and input_mode != "cpu":
        raise ValueError("--genview runs on the cpu input path only (each view needs its own decoded image); "
                         "use --loader cpu or auto")
    release_dir = Path(release_dir)
    rel = open_release(release_dir)
    p = presets.get(preset, recipe)
    pairing = None
    if genview is not None:
        from passkit.stream.pairs import GenViewPairing, shard_map

        pairing = GenViewPairing(str(Path(genview).resolve()), genview_prob)
        pairing.check()
        derived = open_release(pairing.derived)
        shard_map(rel, derived)  # ValueError for a derived release of another source, before any work
    scorer = None
    if quality_loss:
        from passkit.recipes import quality

        p.config.quality_loss = True
        if quality_gamma is not None:
            p.config.quality_gamma = quality_gamma
        if quality_scorer is not None:
            p.config.quality_scorer = quality_scorer
        if quality.parse_scorer(p.config.quality_scorer) is not None:  # ScorerUnavailable is a ValueError
            scorer = quality.build_scorer(p.config.quality_scorer)
    size = p.image_size
    run = "-".join([recipe, *(["genview"] if pairing else []), *(["quality"] if quality_loss else []),
                    preset, f"seed{seed}"])
    out_dir = release_dir / "validation" / run
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir else Path("work") / "validate" / rel.name / run
    if scorer is not None:
        p.config.quality_pca = str(_release_pca(scorer, release_dir, rel, size, seed, device, work))
    rec = p.build_recipe()
    batch = p.batch_size
    total = steps or p.total_steps(rel.num_samples)
    cfg = TrainConfig(steps=total, optim=p.optim, warmup_steps=int(p.warmup_frac * total), seed=seed,
                      device=device, log_every=max(1, min(10, total // 20)), out_dir=work, progress=progress)
    t0 = time.perf_counter()
    data = ReleaseData(release_dir, rec.transform(), batch, seed=seed, loader_mode=input_mode, genview=pairing)
    trainer = Trainer(rec, data, cfg)
    res = trainer.fit()
    dev = trainer.device
    amp = trainer.amp_dtype

    seed_everything(seed)
    random_model = rec.build_model().to(dev).eval()  # the same architecture at random init
    model = res.model.eval()
    emb = _embed_metrics(_release_embeddings(rec, model, release_dir, size, dev, seed))
    emb_rand = _embed_metrics(_release_embeddings(rec, random_model, release_dir, size, dev, seed))

    evals: dict[str, Any] = {}
    if eval_spec:
        spec = p.eval_spec if eval_spec == "synthetic" else eval_spec
        ls = ev.load_labelled(spec, p.eval_size, seed=seed)
        evals = {
            "set": ls.source, "classes": list(ls.classes),
            "pretrained": ev.evaluate_features(lambda x: rec.features(model, x), ls, dev, amp_dtype=amp),
            "random_init": ev.evaluate_features(lambda x: rec.features(random_model, x), ls, dev, amp_dtype=amp),
        }

    chance = rec.cfg.chance_loss
    final_loss = res.final("loss", 0.2)
    recon: dict[str, float] = {}
    if chance is not None:
        loss_check = {"name": "loss", "value": final_loss, "threshold": p.loss_ratio * chance,
                      "rule": f"final loss < {p.loss_ratio} x chance loss {chance:.3f}",
                      "status": "pass" if final_loss < p.loss_ratio * chance else "fail"}
    else:  # MAE: reconstruction error on release images, trained vs random init
        imgs = _release_images(release_dir, size, seed).to(dev)
        recon = {"pretrained": rec.reconstruction_error(model, imgs, seed=seed),
                 "random_init": rec.reconstruction_error(random_model, imgs, seed=seed)}
        limit = p.loss_ratio * recon["random_init"]
        loss_check = {"name": "reconstruction", "value": recon["pretrained"], "threshold": limit,
                      "rule": f"masked-patch error on release images < {p.loss_ratio} x random init "
                              f"{recon['random_init']:.3f}",
                      "status": "pass" if recon["pretrained"] < limit else "fail"}
    if not p.judge_learning:  # smoke: the run is too short to show learning; it proves the plumbing
        finite = math.isfinite(loss_check["value"])
        loss_check.update(threshold=None, status="pass" if finite else "fail",
                          rule=f"{preset}: the loss is finite ({total} steps prove the pipeline runs, not "
                               f"learning: that needs --preset small or full)")
    checks = [loss_check,
              {"name": "rankme", "value": emb["rankme"], "threshold": p.rankme_floor,
               "rule": f"RankMe of release features > {p.rankme_floor}",
               "status": "pass" if emb["rankme"] > p.rankme_floor else "fail"}]
    # features not built for kNN (MAE's) are judged by a linear probe, the others by kNN
    name, key, label = (("linear_probe", "linear_probe", "linear probe") if probe == "linear_probe"
                        else ("knn", "knn_k20_t0.07", "kNN top-1 (k=20, T=0.07)"))
    if evals:
        a, b = evals["pretrained"][key], evals["random_init"][key]
        if p.judge_learning:
            checks.append({"name": name, "value": a, "threshold": b + p.knn_margin,
                           "rule": f"{label} > random init {b:.3f} + {p.knn_margin}",
                           "status": "pass" if a > b + p.knn_margin else "fail"})
        else:  # as the loss: a smoke run's accuracy is measured and shown, not judged
            checks.append({"name": name, "value": a, "threshold": None,
                           "status": "pass" if math.isfinite(a) else "fail",
                           "rule": f"{preset}: {label} is measured (random init {b:.3f}); {total} steps cannot "
                                   "show learning: judging it needs --preset small or full"})
    else:
        checks.append({"name": name, "status": "skipped", "rule": "needs --eval LABELLED"})
    ok = all(c["status"] != "fail" for c in checks)

    paths = [plots.loss_curve(res.history, chance, out_dir / "loss.png")]
    if res.histograms:  # recipes with positive/negative pairs (not MAE)
        paths.append(plots.similarity_histograms(res.histograms, out_dir / "similarity.png"))
    if evals:
        paths.append(plots.knn_bars(evals["pretrained"], evals["random_init"], out_dir / "knn.png"))
    for name in ("metrics.jsonl", "similarity.jsonl"):
        if (work / name).is_file():
            (out_dir / name).write_text((work / name).read_text(encoding="utf-8"), encoding="utf-8")
    pca = _final_pca(model, rec.cfg, out_dir, release_dir) if quality_loss else None
    if pca is not None and pca["file"]:
        paths.append(release_dir / pca["file"])

    entry: dict[str, Any] = {
        "recipe": recipe, "preset": preset, "seed": seed, "verdict": "pass" if ok else "fail",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "release": rel.name, "samples": rel.num_samples,
        "settings": {"recipe": rec.describe(), "optimizer": asdict(p.optim), "batch_size": batch, "steps": total,
                     "loader": input_mode, **_genview_settings(pairing, rec.cfg, pca)},
        "train": {"seconds": round(res.seconds, 2), "images_per_s": round(res.images_per_s, 2), "device": res.device,
                  "final_loss": final_loss, "chance_loss": chance, "optimizer_state": res.optimizer_state,
                  "final": {k: res.final(k, 0.2) for k in ("acc", "pos_sim", "neg_sim", "rankme", "kl",
                                                            "teacher_entropy") if k in res.history[-1]}},
        "reconstruction": recon,
        "release_embeddings": {"pretrained": emb, "random_init": emb_rand},
        "eval": evals, "checks": checks,
        "seconds": round(time.perf_counter() - t0, 2),
        "files": [str(x.relative_to(release_dir)) for x in paths] + [str((out_dir / "validation.json").relative_to(release_dir))],
    }
    entry = _finite(json.loads(json.dumps(entry, default=str)))
    (out_dir / "validation.json").write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if update_manifest:
        short = {k: entry[k] for k in ("recipe", "preset", "seed", "verdict", "created", "checks")}
        short["metrics"] = {"final_loss": final_loss, "rankme": emb["rankme"],
                            **{f"reconstruction_{k}": v for k, v in recon.items()},
                            **{f"{k}": v for k, v in (evals.get("pretrained") or {}).items()},
                            **{f"random_init_{k}": v for k, v in (evals.get("random_init") or {}).items()}}
        short["path"] = str((out_dir / "validation.json").relative_to(release_dir))
        if pairing is not None or quality_loss:  # plain entries keep their former shape
            short["settings"] = _genview_settings(pairing, rec.cfg, pca)
        add_validation(release_dir, _finite(short))
    return ValidationResult(ok, entry, out_dir)


def _release_pca(scorer: Any, release_dir: Path, rel: Any, size: int, seed: int, device: str, work: Path) -> Path:
    """The frozen scorer's foreground direction for this run, in `work`/quality_pca.json: read back when
    an earlier (interrupted) run fitted it with the same scorer, weights, release and image size, else
    fitted now on up to quality.PCA_IMAGES release images (centre crops at the training size)."""
    from passkit.recipes import quality
    from passkit.stream import loader

    shards = json.dumps([(s.get("path"), s.get("sha256")) for s in rel.manifest.get("shards", [])])
    key = {"scorer": scorer.name, "weights": scorer.weights.name, "weights_sha256": scorer.fingerprint(),
           "release": rel.manifest.get("release", rel.name),
           "release_shards_sha256": hashlib.sha256(shards.encode()).hexdigest(),
           "image_size": size, "limit": quality.PCA_IMAGES, "seed": seed}
    path = work / quality.PCA_FILE
    if path.is_file():
        _, info = quality.read_pca(path)
        if {k: info.get(k) for k in key} == key:
            return path
    dev = pick_device(device, DistInfo())
    dl = loader(release_dir, 64, transform=MultiView([eval_transform(size)]), shuffle=True, seed=seed)
    batches = (normalize(plain.to(dev)) for (plain,), _ in dl)
    principal, n = quality.fit_release(scorer, batches, quality.PCA_IMAGES)
    work.mkdir(parents=True, exist_ok=True)
    quality.write_pca(path, principal, {**key, "fit": "release", "images": n})
    return path


def _final_pca(model: torch.nn.Module, cfg: Any, out_dir: Path, release_dir: Path) -> dict[str, Any] | None:
    """Write the direction the run ended with to the validation folder; what the entry says of it."""
    from passkit.recipes import quality
    from passkit.shards import sha256_file

    state = getattr(model, "quality_pca", None)
    principal = state.current() if state is not None else None
    if principal is None:  # the momentum scorer's first window never filled: each batch used its own
        return {"file": None, "fit": "per batch", "fits": 0}
    if cfg.quality_pca:
        _, info = quality.read_pca(Path(cfg.quality_pca))
    else:
        info = {"scorer": cfg.quality_scorer, "fit": "training batches", "refit_images": cfg.quality_refit_images}
    info.update(fits=int(state.fits), drift=round(float(state.drift), 6))
    path = out_dir / quality.PCA_FILE
    quality.write_pca(path, principal, info)
    return {"file": str(path.relative_to(release_dir)), "sha256": sha256_file(path),
            **{k: info[k] for k in ("fit", "images", "refit_images", "fits", "drift", "weights_sha256") if k in info}}


def _genview_settings(pairing: Any, cfg: Any, pca: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a GenView run adds to the settings: the pairing (derived release, its manifest's sha256,
    probability) and the quality loss (gamma, scorer, the foreground direction's file); None for what
    the run did not use."""
    out: dict[str, Any] = {"genview": None, "quality_loss": None}
    if pairing is not None:
        from passkit.shards import sha256_file

        derived = Path(pairing.derived)
        m = json.loads((derived / "manifest.json").read_text(encoding="utf-8"))
        out["genview"] = {**pairing.describe(), "derived_release": m.get("release"),
                          "derived_manifest_sha256": sha256_file(derived / "manifest.json")}
    if getattr(cfg, "quality_loss", False):
        out["quality_loss"] = {"gamma": cfg.quality_gamma, "scorer": cfg.quality_scorer, "pca": pca}
    return out


def _finite(x: Any) -> Any:
    """JSON has no NaN: replace non-finite floats with None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
