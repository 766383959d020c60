"""`lift base`: the toy base's VAE is trained once per (start VAE, data, settings) and reused when only the start's
transformer changes; the transformer is then trained again, from the new start."""

from __future__ import annotations

import shutil

from lift import cli
from lift.io import storage
from lift.toy import zoo


def _weights(folder: str, component: str) -> bytes:
    return storage.read_bytes(f"{folder}/{component}/diffusion_pytorch_model.safetensors")


def test_base_reuses_its_vae_and_retrains_the_transformer_of_a_new_start(zoo_dir, toy_data, tmp_path):
    run, start = str(tmp_path / "run"), tmp_path / "start"
    shutil.copytree(f"{zoo_dir}/cogvideox", start)
    args = ["base", f"run={run}", f"data={toy_data}", f"start={start}", "train=true",
            "vae.max_steps=2", "vae.batch_size=2",
            "transformer.max_steps=2", "transformer.batch_size=2", "vae.num_workers=0", "transformer.num_workers=0"]
    assert cli.main(args) == 0
    first_vae = storage.read_marker(f"{run}/base_train/stage1")
    first = {c: _weights(f"{run}/base", c) for c in ("vae", "transformer")}
    assert first["vae"] != _weights(str(start), "vae"), "the VAE was trained"

    other = tmp_path / "other"
    zoo.build_cogvideox(str(other), seed=1)
    shutil.rmtree(start / "transformer")
    shutil.copytree(other / "transformer", start / "transformer")
    assert cli.main([args[0], "--force", *args[1:]]) == 0
    assert storage.read_marker(f"{run}/base_train/stage1")["time"] == first_vae["time"], "the VAE is reused"
    assert _weights(f"{run}/base", "vae") == first["vae"]
    assert _weights(f"{run}/base", "transformer") != first["transformer"], "trained from the new transformer"
    assert storage.read_marker(f"{run}/base")["counts"]["vae_steps"] == 2

    shutil.rmtree(start / "vae")
    shutil.copytree(other / "vae", start / "vae")
    assert cli.main([args[0], "--force", *args[1:]]) == 0
    assert storage.read_marker(f"{run}/base_train/stage1")["time"] != first_vae["time"], "a new start VAE: trained"
