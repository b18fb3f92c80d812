"""Analysis of results: faithfulness, perturbations, the linear probe, bootstrap, findings and claims."""
