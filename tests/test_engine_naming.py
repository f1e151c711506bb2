from inference.modality import case_name, modality_of, output_name


def test_case_and_output_names():
    assert case_name("amos_0540_0000.nii.gz") == "amos_0540"
    assert output_name("/x/amos_0540_0000.nii.gz") == "amos_0540.nii.gz"
    assert output_name("a_0000_0000.nii.gz") == "a_0000.nii.gz"
    assert case_name("amos_0540.nii.gz") is None and case_name("_0000.nii.gz") is None
    assert case_name("x_0000.nii") == "x"


def test_modality_from_name():
    assert modality_of("fdg_0001_0000.nii.gz") == "PET"
    assert modality_of("PSMA_case_0000.nii.gz") == "PET"
    assert modality_of("whole_pet_scan_0000.nii.gz") == "PET"
    assert modality_of("amos_0540_0000.nii.gz") == "MRI"
    assert modality_of("lld_mmri_T2_0000.nii.gz") == "MRI"
