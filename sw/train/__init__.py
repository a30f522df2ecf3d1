"""Custom-Diffusion LoRA fine-tuning whose INT8 GEMMs run on the accelerator (``qta train``).

Each piece in its own module: the embedded digits data (:mod:`.data`); the project's own
tokenizer, text encoder, UNet config and classifier (:mod:`.models`); the committed checkpoint
(:mod:`.checkpoint`, written by :mod:`.pretrain`); the torch-free run settings (:mod:`.settings`);
the INT8 LoRA layer whose GEMMs are ``golden.lora``'s program sent to one back end
(:mod:`.qlora`, :mod:`.offload`) and the whole-UNet offload (:mod:`.offload_all`); the training
loop (:mod:`.loop`); sampling and scores (:mod:`.sampling`, :mod:`.scores`); outputs and reports
(:mod:`.outputs`, :mod:`.report`); one run from options to folder (:mod:`.train_run`) and its
command line (:mod:`.command`); the bit-for-bit RTL check (:mod:`.step_check`) and the
multi-seed quality study (:mod:`.quality`). torch, diffusers and peft (the ``ml`` extra) are
needed to train, not to load the command: ``qta --help`` and ``qta train --help`` work without.
"""
