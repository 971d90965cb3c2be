"""WorkChains: restart wrappers of the annpot CalcJobs, DFT labelling, committee training, exploration, campaign."""
