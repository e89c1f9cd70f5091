"""The PyTorch side of the equivalence tests (tests/torch_twin.rs). Every command
reads a `ddpm` checkpoint and a safetensors file of inputs written by the Rust
test, and writes its results as safetensors for the test to compare:

    eps   CKPT INPUTS OUT   eps_theta(x, t) of the raw weights        -> eps
    loss  CKPT INPUTS OUT   L_simple at (x0, t, noise) and its gradients
                            -> loss, grad.<parameter name> for every parameter
    ddim  CKPT INPUTS OUT   DDIM (eta 0, `steps` kept steps) from x_T with the
                            EMA weights                                -> sample

Inputs: `x`, `x0`, `noise`, `x_T` float32; `t` float64 (code timesteps);
`steps` float64 [1]. Runs in float32 on the CPU with one thread, so the numbers
do not depend on the machine's thread count.
"""

import sys

import torch
from safetensors.torch import load_file, save_file

import twin


def main():
    command, checkpoint, inputs, out = sys.argv[1:5]
    torch.set_num_threads(1)
    tensors = load_file(inputs)
    if command == "eps":
        model, _, _ = twin.load_weights(checkpoint, weights="model")
        with torch.no_grad():
            result = {"eps": model(tensors["x"], tensors["t"].long())}
    elif command == "loss":
        model, config, _ = twin.load_weights(checkpoint, weights="model")
        diffusion = twin.Diffusion.from_config(config)
        loss = diffusion.training_loss(model, tensors["x0"], tensors["t"].long(), tensors["noise"], config)
        loss.backward()
        result = {"loss": loss.detach().reshape(1)}
        result.update({f"grad.{name}": p.grad for name, p in model.named_parameters()})
    elif command == "ddim":
        model, config, _ = twin.load_weights(checkpoint, weights="ema")
        diffusion = twin.Diffusion.from_config(config)
        kept = twin.evenly_spaced_timesteps(config["timesteps"], int(tensors["steps"][0]))
        result = {"sample": diffusion.ddim_sample(model, tensors["x_T"], kept, config["prediction"], clip=True)}
    else:
        raise SystemExit(f"unknown command {command!r}; the commands are eps, loss, ddim")
    save_file({k: v.detach().contiguous() for k, v in result.items()}, out)


if __name__ == "__main__":
    main()
