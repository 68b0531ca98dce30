"""The method: the nested hash layer, the hashing model, the losses, the per-length weighting, the cascade distillation and the evaluation of codes (mAP and its closed-form metrics)."""
