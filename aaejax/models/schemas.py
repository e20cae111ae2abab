"""Each model's config fields, declared once (configs.Field), and each model's SCHEMA: the
fields it has, picked from these and from the shared part in configs.py. Imports no JAX, so the
command line answers --help and mistakes in its flags at once; the models (aae.py,
aae_categorical.py, aae_paper.py, bigan.py) read their SCHEMA from here and keep in their
`validate` the rules that tie fields together."""

from __future__ import annotations

from aaejax.configs import (ADAM_FIELDS, COMMON, INIT_FIELDS, PRIOR_FIELDS, SCHEDULE_FIELDS, Field, group,
                            pick)

D_UPDATES = ("averaged", "two_batches")
AAE_KINDS = ("basic", "categorical", "paper")
PHASES = ("joint", "sequential")
GE_LOSSES = ("flipped", "minimax")
Z_INPUTS = ("concat", "hidden")
UPDATE_ORDERS = ("d_first", "simultaneous")
BN_FLAVOURS = ("flax", "official", "torch")  # their numerics: nets.BN_FLAVOURS

# The AAE family's fields; the categorical AAE (aae_categorical.py) and the paper's method
# (aae_paper.py) pick theirs from these.
AAE_FIELDS = group(
    Field("aae_kind", "basic", "which AAE, set by the variant: basic = a continuous code | categorical = "
          "category + style codes (aae_categorical.py) | paper = the paper's own method (aae_paper.py)",
          choices=AAE_KINDS),
    Field("hidden", (512, 512), "encoder and decoder hidden widths", low=1),
    Field("disc_hidden", (512, 256), "latent discriminator hidden widths", low=1),
    Field("num_classes", 10, "classes of the labels", low=2),
    Field("recon_weight", 0.999, "weight of the reconstruction MSE ([-1, 1] pixels) in the autoencoder's loss",
          low=0),
    Field("adv_weight", 0.001, "weight of the adversarial (fooling) loss in the autoencoder's loss", low=0),
    Field("d_update", "averaged", "averaged = one D update on the mean of its real and fake losses | "
          "two_batches = one on each in turn (Keras-GAN; D's schedule still advances once a step)",
          choices=D_UPDATES),
    Field("prior_conditioned", False, "D also sees the one-hot label, the prior sample comes from the label's "
          "component (2-D priors, paper Figure 4)"),
    Field("supervised", False, "the decoder also gets the one-hot label; the code holds the style (paper "
          "Figure 6)"),
)

# The categorical code's fields (the paper's method, aae_paper.py, picks three of them).
CATEGORICAL_FIELDS = group(
    Field("num_categories", 10, "categories K of the code", low=0),
    Field("style_dim", 10, "size of the style code", low=1),
    Field("num_labels", 0, "labelled examples (class-balanced, chosen by the seed); 0 = clustering", low=-1),
    Field("labelled_batch_size", 100, "labelled examples per step", low=1),
    Field("supervised_weight", 1.0, "weight of the cross-entropy on the labelled batch", low=0),
    Field("phases", "joint", "joint = one weighted update | sequential = the paper's three phases", choices=PHASES),
    Field("balance_weight", 0.0, "weight of KL(batch-mean y || uniform) in the encoder's loss: keeps every "
          "category in use", low=0),
    Field("input_noise", 0.0, "std of Gaussian noise on the encoder's input (categorical: [-1, 1] scale; the "
          "paper's method: [0, 1]); 0 = none", low=0),
    Field("labelled_recon", False, "also rebuild the labelled images from their true label"),
    Field("labelled_shift", 0, "random shift of the labelled images, pixels", low=0, high=14),
    Field("consistency_weight", 0.0, "weight of KL(y(x) || y(view of x)) on the unlabelled batch (not in the "
          "paper)", low=0),
    Field("consistency_shift", 2, "the view's random shift, pixels", low=1, high=14),
    Field("augment_rotation", 0.0, "random rotation of the labelled images and the view, degrees", low=0, high=180),
)

# The paper's method: SGD with momentum, one optimizer per phase (optim.PHASES).
PHASE_FIELDS = group(
    Field("lr_recon", 0.01, "SGD rate of the reconstruction phase", above=0),
    Field("momentum_recon", 0.9, "momentum of the reconstruction phase", low=0, below=1),
    Field("lr_adv", 0.1, "SGD rate of the discriminators and of the encoder as generator", above=0),
    Field("momentum_adv", 0.1, "momentum of the discriminators and of the encoder as generator", low=0, below=1),
    Field("lr_supervised", 0.1, "SGD rate of the semi-supervised (cross-entropy) phase", above=0),
    Field("momentum_supervised", 0.9, "momentum of the semi-supervised phase", low=0, below=1),
)

BIGAN_FIELDS = group(
    Field("g_hidden", (1024, 1024), "generator hidden widths", low=1),
    Field("e_hidden", (1024, 1024), "encoder hidden widths", low=1),
    Field("d_hidden", (1024, 1024), "discriminator hidden widths", low=1),
    Field("hidden_bias", True, "biases in the hidden layers"),
    Field("output_bias", True, "biases in the output layers"),
    Field("bn_affine", True, "BatchNorm with learned scale and offset"),
    Field("bn_flavour", "flax", "BatchNorm numerics: flax (eps 1e-5) | official (eps 1e-8, unbiased deploy "
          "variance) | torch", choices=BN_FLAVOURS),
    Field("bn_eval_batches", 50, "training batches over which BatchNorm population statistics are recomputed "
          "for evaluation", low=1),
    Field("z_input", "concat", "where z enters D: concat (with x, first layer) | hidden (linearly at the second "
          "layer, before BN)", choices=Z_INPUTS),
    Field("zero_output", False, "D's output weights start at zero"),
    Field("g_z_skip", False, "G's later hidden layers also get a linear map of z (before BN)"),
    Field("g_bn_first", True, "BatchNorm after G's first hidden layer too (the PyTorch seed program has none "
          "there)"),
    Field("ge_loss", "flipped", "G's and E's loss: flipped (non-saturating, labels swapped) | minimax (minus D's "
          "loss)", choices=GE_LOSSES),
    Field("loss_scale", 1.0, "each loss is loss_scale * (BCE on the real pairs + BCE on the fake pairs); "
          "official 0.5", above=0),
    Field("update_order", "d_first", "d_first = G/E against the updated D | simultaneous = all three from the "
          "same state", choices=UPDATE_ORDERS),
)

# Where a model has a shared field with a narrower range, its own default or meaning.
_CATEGORICAL_OWN = {
    "num_categories": CATEGORICAL_FIELDS["num_categories"].restrict(low=2, doc="categories K of the code"),
    "num_labels": CATEGORICAL_FIELDS["num_labels"].restrict(
        low=0, doc="labelled examples (class-balanced, chosen by the seed); 0 = clustering"),
    "input_noise": CATEGORICAL_FIELDS["input_noise"].restrict(
        doc="std of Gaussian noise on the encoder's input ([-1, 1] pixels); 0 = none"),
}
_PAPER_OWN = {
    "init_std": INIT_FIELDS["init_std"].restrict(default=0.01, low=None, above=0,
                                                 doc="weights ~ N(0, init_std), biases 0 (the paper: 0.01)"),
    "num_categories": CATEGORICAL_FIELDS["num_categories"].restrict(
        doc="categories K of the code; 0 = none (Table 1's continuous code); not 1"),
    "num_labels": CATEGORICAL_FIELDS["num_labels"].restrict(
        doc="labelled examples (class-balanced, chosen by the seed); 0 = clustering; -1 = every training label"),
    "input_noise": CATEGORICAL_FIELDS["input_noise"].restrict(
        doc="std of Gaussian noise on the encoder's input ([0, 1] pixels); 0 = none"),
}
_BIGAN_PRIOR = PRIOR_FIELDS["prior"].restrict(default="uniform", choices=("uniform",),
                                              doc="the code's prior: uniform on [prior_low, prior_high], E's output range")

# Each model's fields: SCHEMAS[model][aae_kind] for the AAE, SCHEMAS["bigan"].
SCHEMAS = {
    "aae": {
        "basic": {**COMMON, **SCHEDULE_FIELDS, **ADAM_FIELDS, **pick(INIT_FIELDS, "init"), **PRIOR_FIELDS,
                  **AAE_FIELDS},
        "categorical": {**COMMON, **SCHEDULE_FIELDS, **ADAM_FIELDS, **pick(INIT_FIELDS, "init"),
                        **pick(PRIOR_FIELDS, "prior_scale"),
                        **pick(AAE_FIELDS, "aae_kind hidden disc_hidden num_classes recon_weight adv_weight"),
                        **CATEGORICAL_FIELDS, **_CATEGORICAL_OWN},
        "paper": {**COMMON, **SCHEDULE_FIELDS, **PHASE_FIELDS, "init_std": _PAPER_OWN["init_std"],
                  **pick(PRIOR_FIELDS, "latent_dim prior_scale"),
                  **pick(AAE_FIELDS, "aae_kind hidden disc_hidden num_classes"),
                  **pick(_PAPER_OWN, "num_categories num_labels input_noise")},
    },
    "bigan": {**COMMON, **SCHEDULE_FIELDS, **ADAM_FIELDS, **INIT_FIELDS, **pick(PRIOR_FIELDS, "latent_dim"),
              "prior": _BIGAN_PRIOR, **pick(PRIOR_FIELDS, "prior_low prior_high"), **BIGAN_FIELDS},
}
