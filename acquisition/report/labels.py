"""Every word the record and the certificate print, in Chinese and English, in one table.

By default a label shows both languages on one line ("示值误差 Indication error"), as a
bilingual certificate does; `zh` or `en` keeps one. Templates and plots take their text
from here only, so that a report in one language never leaks the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Language = Literal["both", "zh", "en"]

# key -> (Chinese, English); `{name}` fields are filled by the caller.
LABELS: dict[str, tuple[str, str]] = {
    # titles and sections
    "record_title": ("温室气体无组织排放监测系统校准原始记录",
                     "Original calibration record of a GHG fugitive-emission monitoring system"),
    "certificate_title": ("校准证书内页", "Calibration certificate: results page"),
    "run": ("校准运行", "Calibration run"),
    "station": ("站点", "Station"),
    "operator": ("操作员", "Operator"),
    "dut": ("被校系统", "System under test (DUT)"),
    "devices": ("可控气体释放装置设备", "CRF devices"),
    "release_points": ("释放点位置", "Release-point positions"),
    "steps": ("校准步骤", "Calibration steps"),
    "step": ("步骤", "Step"),
    "budget": ("标准值不确定度分量", "Uncertainty budget of the truth"),
    "matched_reports": ("计入的被校系统报告", "DUT reports counted"),
    "unassigned_reports": ("未计入任何步骤的报告", "DUT reports counted for no step"),
    "matching": ("报告匹配参数", "Report matching parameters"),
    "conditions": ("校准条件", "Calibration conditions"),
    "events": ("事件与联锁", "Events and interlocks"),
    "timeline": ("释放速率时间线", "Release-rate timeline"),
    "parity_plot": ("被校系统示值与标准值", "DUT against truth (parity)"),
    "localization_plot": ("定位结果", "Localization around the release point"),
    "specification_used": ("校准依据", "Calibration specification"),
    "standard_used": ("校准所用计量标准", "Standard used"),
    "results": ("校准结果", "Calibration results"),
    "blanks": ("零释放（空白）响应", "Blank responses (nothing released)"),
    "parity": ("线性拟合", "Parity fit"),
    "formulas": ("计算公式", "Formulas"),
    "laboratory": ("校准机构", "Calibration laboratory"),
    "address": ("地址", "Address"),
    # default texts of the [certificate] table
    "default_standard": ("可控气体释放装置", "Controlled Release Facility"),
    "default_specification": ("温室气体无组织排放监测系统校准规范",
                              "Calibration specification for greenhouse-gas fugitive-emission "
                              "monitoring systems"),
    "recalibration": ("建议复校时间间隔不超过 {months} 个月",
                      "Recommended re-calibration interval: not more than {months} months"),
    # run fields
    "run_id": ("运行编号", "Run id"),
    "status": ("状态", "Status"),
    "reason": ("原因", "Reason"),
    "start": ("开始", "Start"),
    "end": ("结束", "End"),
    "duration": ("持续时间", "Duration"),
    "sequence": ("序列", "Sequence"),
    "sequence_hash": ("序列散列", "Sequence hash"),
    "config_hash": ("配置散列", "Config hash"),
    "software": ("软件", "Software"),
    "clock_offset": ("GNSS 与主机时钟差", "Clock offset, GNSS minus host"),
    "dut_id": ("被校系统编号", "DUT id"),
    "configured": ("配置", "Configuration"),
    "not_configured": ("无 [dut] 配置，使用默认值", "no [dut] table: defaults"),
    "none": ("无", "none"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    # devices
    "device": ("设备", "Device"),
    "model": ("型号", "Model"),
    "serial": ("序列号", "Serial number"),
    "firmware": ("固件", "Firmware"),
    "certificate_id": ("校准证书编号", "Certificate"),
    "profile": ("寄存器配置", "Profile"),
    "full_scale": ("满量程", "Full scale"),
    "mfc": ("流量控制器", "MFC"),
    # positions
    "point": ("释放点", "Release point"),
    "source": ("来源", "Source"),
    "latitude": ("纬度", "Latitude"),
    "longitude": ("经度", "Longitude"),
    "altitude": ("高程", "Altitude"),
    "h_spread": ("水平离散 (1σ)", "Horizontal spread (1σ)"),
    "n_fixes": ("定位次数", "Fixes"),
    "min_quality": ("最低定位质量", "Minimum fix quality"),
    "more_positions": ("另有 {n} 次定位见原始记录", "{n} more positions in the record"),
    # steps
    "target": ("设定值", "Target"),
    "stable_at": ("稳定", "Stable"),
    "stable": ("稳定", "Stable"),
    "truth": ("标准值", "Truth"),
    "truth_std": ("标准偏差", "Std. dev."),
    "readings": ("读数个数", "Readings"),
    "u_expanded": ("扩展不确定度 U (k=2)", "Expanded uncertainty U (k=2)"),
    "u_expanded_rel": ("相对扩展不确定度 (k=2)", "Relative U (k=2)"),
    "qc_flags": ("质量标记", "QC flags"),
    "component": ("分量", "Component"),
    "u_standard": ("标准不确定度", "Standard uncertainty"),
    "relative": ("相对值", "Relative"),
    "evaluation": ("评定类型", "Type"),
    "basis": ("依据（分布）", "Basis (distribution)"),
    "combined": ("合成标准不确定度", "Combined standard uncertainty"),
    "report_id": ("报告", "Report"),
    "report_time": ("报告时间或窗口", "Time or window"),
    "rate": ("排放速率", "Emission rate"),
    "detected": ("检出", "Detected"),
    "why": ("原因", "Why"),
    "time": ("时间", "Time"),
    "kind": ("类型", "Kind"),
    "detail": ("详情", "Detail"),
    # conditions
    "wind_speed": ("风速", "Wind speed"),
    "wind_direction": ("风向", "Wind direction"),
    "temperature": ("温度", "Temperature"),
    "pressure": ("大气压", "Pressure"),
    "minimum": ("最小", "min"),
    "mean": ("平均", "mean"),
    "maximum": ("最大", "max"),
    "circular_spread": ("角度离散", "angular spread"),
    "met_device": ("气象设备", "Weather device"),
    "no_met_device": ("未指定气象设备：无条件数据", "no weather device: no conditions"),
    "observed": ("实测范围", "Observed"),
    "limits": ("规定范围", "Limits"),
    "no_limit": ("未规定", "no limit"),
    "within_limits": ("全部步骤均在规定的校准条件内", "Every step was within the limits"),
    "outside_limits": ("下列步骤超出规定的校准条件", "Steps outside the limits"),
    "no_limits": ("未规定校准条件范围", "No limits configured"),
    "gnss_quality": ("释放点定位质量", "Release-point position quality"),
    "sector": ("{start}° 至 {end}°（顺时针）", "{start}° to {end}° clockwise"),
    # results
    "nominal": ("校准点", "Nominal rate"),
    "n_valid": ("次数 n / 有效", "Repeats n / valid"),
    "truth_mean": ("标准值平均", "Truth mean"),
    "dut_mean": ("被校系统示值平均", "DUT mean"),
    "rate_error": ("排放速率示值误差", "Emission-rate indication error"),
    "rate_repeatability": ("排放速率重复性", "Emission-rate repeatability"),
    "loc_error": ("定位示值误差", "Localization indication error"),
    "loc_error_mean": ("单次定位误差平均", "Mean per-repeat localization error"),
    "loc_repeatability": ("定位重复性", "Localization repeatability"),
    "flags": ("标记", "Flags"),
    "n_reports": ("报告数", "Reports"),
    "false_positive": ("误报平均速率", "False-positive mean rate"),
    "slope": ("斜率", "Slope"),
    "intercept": ("截距", "Intercept"),
    "r2": ("决定系数 R²", "R²"),
    "slope_origin": ("过原点斜率", "Slope through origin"),
    "pairs": ("数据对", "Pairs"),
    "measuring_range": ("测量范围", "Measuring range"),
    "expanded_range": ("扩展不确定度 Urel (k=2)", "Expanded uncertainty Urel (k=2)"),
    "place_and_time": ("校准地点与日期", "Place and date"),
    "no_data": ("无数据", "no data"),
    "u_note": ("U 为扩展不确定度，包含因子 k = 2",
               "U: expanded uncertainty, coverage factor k = 2"),
    # plots
    "time_utc": ("时间 (UTC)", "Time (UTC)"),
    "rate_kg_h": ("排放速率 (kg/h)", "Emission rate (kg/h)"),
    "truth_kg_h": ("标准值 (kg/h)", "Truth (kg/h)"),
    "dut_kg_h": ("被校系统示值 (kg/h)", "DUT (kg/h)"),
    "truth_line": ("标准值", "truth"),
    "target_line": ("设定值", "target"),
    "report_counted": ("计入的报告", "report counted"),
    "report_unassigned": ("未计入的报告", "report not counted"),
    "ols_fit": ("最小二乘拟合", "OLS fit"),
    "east_m": ("东向偏差 (m)", "East (m)"),
    "north_m": ("北向偏差 (m)", "North (m)"),
    "true_position": ("释放点", "release point"),
    "mean_position": ("平均位置", "mean position"),
    # page furniture
    "page": ("第 {page} 页 共 {pages} 页", "page {page} of {pages}"),
}

# Words that come from the data (flags, statuses, budget components, reasons): translated
# where known, shown as they are otherwise.
TERMS: dict[str, tuple[str, str]] = {
    "completed": ("完成", "completed"),
    "aborted": ("中止", "aborted"),
    "failed": ("失败", "failed"),
    "interrupted": ("中断", "interrupted"),
    "running": ("进行中", "running"),
    "surveyed": ("测量坐标", "surveyed"),
    "A": ("A 类", "type A"),
    "B": ("B 类", "type B"),
    "readback mean": ("读数平均值", "readback mean"),
    "MFC calibration certificate": ("流量控制器校准证书", "MFC calibration certificate"),
    "MFC accuracy spec (uncorrected)": ("流量控制器准确度指标（未修正）",
                                        "MFC accuracy spec (uncorrected)"),
    "gas purity": ("气体纯度", "gas purity"),
    "gas conversion factor": ("气体转换系数", "gas conversion factor"),
    "reference conditions / compressibility": ("参比条件／压缩因子",
                                               "reference conditions / compressibility"),
    "too_few_repeats": ("有效重复次数不足", "too few valid repeats"),
    "missed_detection": ("漏检", "missed detection"),
    "unstable": ("流量未稳定", "unstable"),
    "not_detected": ("报告未检出", "reported not detected"),
    "no_position": ("无定位结果", "no DUT position"),
    "no_reference_position": ("无释放点位置", "no release-point position"),
    "no_truth_u": ("标准值无不确定度", "no truth uncertainty"),
    "u_truth_whole": ("不确定度整体合成", "uncertainty taken whole"),
    "too_few_readings": ("读数不足", "too few readings"),
    "position_unknown": ("释放点位置未知", "release-point position unknown"),
    "unmatched": ("未匹配任何步骤", "matches no step"),
    "ambiguous": ("匹配多个步骤", "matches several steps"),
    "wind_run_short": ("风程不足", "wind run too short"),
    "temperature_c": ("温度", "temperature"),
    "pressure_kpa": ("大气压", "pressure"),
    "wind_speed_m_s": ("风速", "wind speed"),
    "wind_sector_deg": ("风向", "wind direction"),
}


class Labels:
    """The report's text in `language`: `labels("key")`, `labels.each(...)` for one text
    per language shown, `labels.term(...)` and `labels.flags(...)` for words from the
    data."""

    def __init__(self, language: Language = "both") -> None:
        self.language = language

    def _pick(self, pair: tuple[str, str]) -> list[str]:
        zh, en = pair
        return {"both": [zh, en], "zh": [zh], "en": [en]}[self.language]

    def each(self, key: str, **fields: object) -> list[str]:
        """The label in each language shown, fields filled in."""
        return [text.format(**fields) for text in self._pick(LABELS[key])]

    def __call__(self, key: str, **fields: object) -> str:
        return " ".join(self.each(key, **fields))

    def term(self, word: str) -> str:
        """A word from the data in the report's language(s), or the word itself."""
        pair = TERMS.get(word)
        if pair is None:
            return word
        return " ".join(self._pick(pair))

    def flags(self, flags: Iterable[str]) -> list[str]:
        """Results or QC flags, one text per flag name: those that name a step
        (`name:idx`) gathered, with the steps numbered as the record counts them (idx + 1):
        a point missed at 20 steps is one flag, not 20."""
        steps: dict[str, list[str]] = {}
        for flag in flags:
            name, _, detail = flag.partition(":")
            numbers = steps.setdefault(name, [])
            if detail:
                numbers.append(str(int(detail) + 1) if detail.isdigit() else detail)
        return [self.term(name) + (f" ({self('step')} {', '.join(numbers)})" if numbers else "")
                for name, numbers in steps.items()]
