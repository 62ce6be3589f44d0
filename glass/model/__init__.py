"""The GLASS model (paper Sec. 4, supplement Sec. 2): a frozen DINOv2 encoder, slot attention,
the MLP decoder for instance guidance, Hungarian-matched semantic guidance, and the Stable
Diffusion decoder; ``glass.model.glass.GlassModel`` puts them together with the paper's loss."""
