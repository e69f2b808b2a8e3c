"""A small PyTorch restatement of the published module layouts, for the converter's tests.

Written from `shared/design/mirrorgan-reference.md` and the published AttnGAN/MirrorGAN model
definitions: the module and attribute names reproduce their state_dict keys, the forward passes
their computation. Every size is a constructor argument, so tests run tiny versions.
Deviation (on purpose): the word-attention padding mask is applied per sample. The published
code repeats it batch-major against query-major scores (AttnGAN issue #93), and the Keras
networks fix that; the converter maps weights, not that defect.
Only imported by tests that have already called `pytest.importorskip("torch")`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


# === Shared pieces (published model.py) ===
class GLU(nn.Module):
    def forward(self, x):
        nc = x.size(1) // 2
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


def conv1x1(in_planes, out_planes, bias=False):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


def conv3x3(in_planes, out_planes):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def up_block(in_planes, out_planes):
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_planes, out_planes * 2),
        nn.BatchNorm2d(out_planes * 2),
        GLU(),
    )


class ResBlock(nn.Module):
    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            GLU(),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num),
        )

    def forward(self, x):
        return self.block(x) + x


# === STEM: RNN_ENCODER ===
class RNN_ENCODER(nn.Module):
    def __init__(self, ntoken, ninput=300, nhidden=256, rnn_type="LSTM", drop_prob=0.5):
        super().__init__()
        self.nhidden = nhidden // 2
        self.rnn_type = rnn_type
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        rnn = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn(ninput, self.nhidden, 1, batch_first=True, bidirectional=True)

    def forward(self, captions, cap_lens):
        """Returns words [B, nef, T] (T = captions.size(1)) and sentence [B, nef]."""
        emb = self.drop(self.encoder(captions))
        packed = pack_padded_sequence(emb, cap_lens.cpu(), batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed)
        output = pad_packed_sequence(output, batch_first=True, total_length=captions.size(1))[0]
        words_emb = output.transpose(1, 2)
        h_n = hidden[0] if self.rnn_type == "LSTM" else hidden
        sent_emb = h_n.transpose(0, 1).contiguous().view(-1, self.nhidden * 2)
        return words_emb, sent_emb


# === GLAM: G_NET ===
class CA_NET(nn.Module):
    def __init__(self, t_dim, c_dim):
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.relu = GLU()

    def forward(self, text_embedding, eps=None):
        """c_code = mu + eps * std; `eps=None` gives c_code = mu (deterministic)."""
        x = self.relu(self.fc(text_embedding))
        mu, logvar = x[:, : self.c_dim], x[:, self.c_dim :]
        c_code = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
        return c_code, mu, logvar


class INIT_STAGE_G(nn.Module):
    def __init__(self, ngf, ncf, z_dim):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(
            nn.Linear(z_dim + ncf, ngf * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(ngf * 4 * 4 * 2),
            GLU(),
        )
        self.upsample1 = up_block(ngf, ngf // 2)
        self.upsample2 = up_block(ngf // 2, ngf // 4)
        self.upsample3 = up_block(ngf // 4, ngf // 8)
        self.upsample4 = up_block(ngf // 8, ngf // 16)

    def forward(self, z_code, c_code):
        out = self.fc(torch.cat((c_code, z_code), 1)).view(-1, self.gf_dim, 4, 4)
        out = self.upsample1(out)
        out = self.upsample2(out)
        out = self.upsample3(out)
        return self.upsample4(out)


def _word_attention(h, source, mask):
    """Eq. 4: h [B, C, H, W], projected words source [B, C, T] -> (context, attn [B, T, H, W])."""
    batch, channels, ih, iw = h.shape
    query_len, source_len = ih * iw, source.size(2)
    target_t = h.view(batch, channels, query_len).transpose(1, 2)
    attn = torch.bmm(target_t, source)  # [B, HW, T]
    if mask is not None:
        # Per-sample mask (see the module docstring).
        attn = attn.masked_fill(mask[:, None, :], -float("inf"))
    attn = torch.softmax(attn.view(batch * query_len, source_len), dim=1)
    attn = attn.view(batch, query_len, source_len).transpose(1, 2).contiguous()
    context = torch.bmm(source, attn).view(batch, -1, ih, iw)
    return context, attn.view(batch, -1, ih, iw)


class GLAttentionGeneral(nn.Module):
    """MirrorGAN's global-local attention (GLAttention.py)."""

    def __init__(self, idf, cdf, ncf):
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)
        self.conv_sentence_vis = conv1x1(idf, idf)
        self.linear = nn.Linear(ncf, idf)

    def forward(self, h, sentence, context, mask):
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)
        weighted_context, word_attn = _word_attention(h, source, mask)
        batch, idf, ih, iw = h.shape
        sentence = self.linear(sentence).view(batch, idf, 1, 1).repeat(1, 1, ih, iw)
        sent_att = torch.softmax(self.conv_sentence_vis(h * sentence), dim=1)  # Eq. 5
        return weighted_context, sentence * sent_att, word_attn


class GlobalAttentionGeneral(nn.Module):
    """AttnGAN's word attention (GlobalAttention.py): no sentence level."""

    def __init__(self, idf, cdf):
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)

    def forward(self, h, context, mask):
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)
        return _word_attention(h, source, mask)


class NEXT_STAGE_G(nn.Module):
    """MirrorGAN's refinement stage: cat[h, word ctx, sentence ctx] -> conv1x1 -> res -> up."""

    def __init__(self, ngf, nef, ncf, r_num):
        super().__init__()
        self.att = GLAttentionGeneral(ngf, nef, ncf)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = up_block(ngf * 2, ngf)
        self.conv = conv1x1(ngf * 3, ngf * 2)

    def forward(self, h_code, c_code, word_embs, mask):
        context, sentence, att = self.att(h_code, c_code, word_embs, mask)
        out = self.conv(torch.cat((h_code, context, sentence), 1))
        return self.upsample(self.residual(out)), att


class ATTNGAN_NEXT_STAGE_G(nn.Module):
    """AttnGAN's refinement stage: cat[h, word ctx] straight into the residual blocks."""

    def __init__(self, ngf, nef, ncf, r_num):
        super().__init__()
        self.att = GlobalAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = up_block(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask):
        context, att = self.att(h_code, word_embs, mask)
        out = self.residual(torch.cat((h_code, context), 1))
        return self.upsample(out), att


class GET_IMAGE_G(nn.Module):
    def __init__(self, ngf):
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class G_NET(nn.Module):
    def __init__(self, ngf, nef, ncf, z_dim, r_num, branch_num=3, variant="mirrorgan"):
        super().__init__()
        stage = NEXT_STAGE_G if variant == "mirrorgan" else ATTNGAN_NEXT_STAGE_G
        self.branch_num = branch_num
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, ncf, z_dim)
        self.img_net1 = GET_IMAGE_G(ngf)
        if branch_num > 1:
            self.h_net2 = stage(ngf, nef, ncf, r_num)
            self.img_net2 = GET_IMAGE_G(ngf)
        if branch_num > 2:
            self.h_net3 = stage(ngf, nef, ncf, r_num)
            self.img_net3 = GET_IMAGE_G(ngf)

    def forward(self, z_code, sent_emb, word_embs, mask, eps=None):
        """word_embs [B, nef, T]; mask [B, T] True at padding (published convention)."""
        c_code, mu, logvar = self.ca_net(sent_emb, eps)
        h = self.h_net1(z_code, c_code)
        images, maps = [self.img_net1(h)], []
        for k in range(2, self.branch_num + 1):
            h, att = getattr(self, f"h_net{k}")(h, c_code, word_embs, mask)
            images.append(getattr(self, f"img_net{k}")(h))
            maps.append(att)
        return images, maps, mu, logvar


# === Discriminators: D_NET64/128/256 ===
def block3x3_leaky_relu(in_planes, out_planes):
    return nn.Sequential(
        conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2)
    )


def down_block(in_planes, out_planes):
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.LeakyReLU(0.2),
    )


def encode_image_by_16times(ndf):
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2),
    )


class D_GET_LOGITS(nn.Module):
    def __init__(self, ndf, nef, bcondition=False):
        super().__init__()
        self.ef_dim = nef
        self.bcondition = bcondition
        if bcondition:
            self.jointConv = block3x3_leaky_relu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code, c_code=None):
        """Returns the logits before the published sigmoid, [B]."""
        if self.bcondition:
            c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
            h_code = self.jointConv(torch.cat((h_code, c_code), 1))
        return self.outlogits[0](h_code).view(-1)


class D_NET(nn.Module):
    """D_NET64, D_NET128 or D_NET256 by `image_size`."""

    def __init__(self, image_size, ndf, nef):
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.extra = []
        if image_size == 128:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s32_1 = block3x3_leaky_relu(ndf * 16, ndf * 8)
            self.extra = ["img_code_s32", "img_code_s32_1"]
        elif image_size == 256:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s64 = down_block(ndf * 16, ndf * 32)
            self.img_code_s64_1 = block3x3_leaky_relu(ndf * 32, ndf * 16)
            self.img_code_s64_2 = block3x3_leaky_relu(ndf * 16, ndf * 8)
            self.extra = ["img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"]
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False)
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)

    def image_code(self, images):
        """The image code both logit heads read (`img_code_s16`, then the size's extra blocks)."""
        code = self.img_code_s16(images)
        for name in self.extra:
            code = getattr(self, name)(code)
        return code

    def forward(self, images, sentence):
        code = self.image_code(images)
        return self.UNCOND_DNET(code), self.COND_DNET(code, sentence)


# === STREAM: EncoderCNN (torchvision ResNet, `resnet.*`) and DecoderRNN ===
class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def resnet_children(blocks=(3, 8, 36, 3), width=64):
    """torchvision resnet152's children without fc: conv1, bn1, relu, maxpool, layer1-4, pool."""
    layers, inplanes = [], width
    for stage, count in enumerate(blocks):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        stage_blocks = [Bottleneck(inplanes, planes, stride, downsample)]
        inplanes = planes * 4
        stage_blocks += [Bottleneck(inplanes, planes) for _ in range(count - 1)]
        layers.append(nn.Sequential(*stage_blocks))
    return [
        nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        *layers,
        nn.AdaptiveAvgPool2d(1),
    ]


class EncoderCNN(nn.Module):
    def __init__(self, embed_size, blocks=(3, 8, 36, 3), width=64):
        super().__init__()
        self.resnet = nn.Sequential(*resnet_children(blocks, width))
        self.linear = nn.Linear(width * 32, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images):
        features = self.resnet(images).flatten(1)
        return self.bn(self.linear(features))


class DecoderRNN(nn.Module):
    def __init__(self, embed_size, hidden_size, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, 1, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)

    def forward(self, features, captions):
        """Teacher forcing: step t sees the image and words < t, predicts word t: [B, T, V]."""
        inputs = torch.cat((features.unsqueeze(1), self.embed(captions[:, :-1])), 1)
        hiddens, _ = self.lstm(inputs)
        return self.linear(hiddens)


# === DAMSM image encoder: CNN_ENCODER (torchvision Inception-v3 trunk) ===
class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _branch_pool(x, count_include_pad):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=count_include_pad)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features, count_include_pad=True):
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(_branch_pool(x, self.count_include_pad))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, count_include_pad=True):
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for name in ("branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"):
            d = getattr(self, name)(d)
        pool = self.branch_pool(_branch_pool(x, self.count_include_pad))
        return torch.cat([self.branch1x1(x), b7, d, pool], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for name in ("branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"):
            b7 = getattr(self, name)(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, count_include_pad=True):
        super().__init__()
        self.count_include_pad = count_include_pad
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(_branch_pool(x, self.count_include_pad))
        return torch.cat([self.branch1x1(x), b3, d, pool], 1)


class CNN_ENCODER(nn.Module):
    """AttnGAN's DAMSM image encoder on 299x299 inputs (the resize is left to the caller).

    `count_include_pad=False` makes the branch average pools exclude the padding, as Keras'
    "same" pools do; torchvision (and so the published encoder) includes it.
    """

    def __init__(self, nef=256, count_include_pad=True):
        super().__init__()
        cip = count_include_pad
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32, cip)
        self.Mixed_5c = InceptionA(256, 64, cip)
        self.Mixed_5d = InceptionA(288, 64, cip)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, cip)
        self.Mixed_6c = InceptionC(768, 160, cip)
        self.Mixed_6d = InceptionC(768, 160, cip)
        self.Mixed_6e = InceptionC(768, 192, cip)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, cip)
        self.Mixed_7c = InceptionE(2048, cip)
        self.emb_features = conv1x1(768, nef)
        self.emb_cnn_code = nn.Linear(2048, nef)

    def trunk(self, x):
        """x [B, 3, 299, 299] -> (Mixed_6e [B, 768, 17, 17], Mixed_7c [B, 2048, 8, 8])."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        regions = x
        for name in ("Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return regions, x

    def project(self, regions, global_map):
        """The trainable projections: (emb_features(regions), emb_cnn_code(8x8 average))."""
        pooled = F.avg_pool2d(global_map, kernel_size=global_map.shape[-1]).flatten(1)
        return self.emb_features(regions), self.emb_cnn_code(pooled)

    def forward(self, x):
        return self.project(*self.trunk(x))


# === Test helpers ===
def randomize(module: nn.Module, seed: int = 0, gamma_sign: bool = False) -> nn.Module:
    """Random weights and BN statistics, scaled to keep activations O(1); eval mode.

    Args:
        module: the module to fill in place.
        seed: torch generator seed.
        gamma_sign: give about a fifth of the BN scales a negative sign (the Inception
            converter folds the scale into the kernel, so its sign matters).
    """
    generator = torch.Generator().manual_seed(seed)

    def rand(shape):
        return torch.rand(shape, generator=generator)

    def randn(shape):
        return torch.randn(shape, generator=generator)

    with torch.no_grad():
        for module_ in module.modules():
            if isinstance(module_, nn.modules.batchnorm._BatchNorm):
                scale = rand(module_.weight.shape) + 0.5
                if gamma_sign:
                    scale = torch.where(rand(scale.shape) < 0.2, -scale, scale)
                module_.weight.copy_(scale)
                module_.bias.copy_(0.1 * randn(module_.bias.shape))
                module_.running_mean.copy_(0.1 * randn(module_.running_mean.shape))
                module_.running_var.copy_(rand(module_.running_var.shape) + 0.5)
                continue
            for tensor in module_.parameters(recurse=False):
                if tensor.dim() == 1:
                    tensor.copy_(0.1 * randn(tensor.shape))
                else:
                    # He scale for convolutions (ReLU trunks), 1/sqrt(fan_in) otherwise.
                    gain = 2.0 if tensor.dim() == 4 else 1.0
                    tensor.copy_(randn(tensor.shape) * (gain / tensor[0].numel()) ** 0.5)
    return module.eval()


# === The published MirrorGAN training iteration (for benchmarks/train_step.py --against-torch) ===
class PublishedIteration:
    """One MirrorGAN training iteration as the published trainer runs it, on these modules.

    Every discriminator is updated once (AttnGAN's `discriminator_loss`: real and fake,
    unconditional and sentence-conditioned, and the mismatched pair real[:-1] with s[1:],
    reusing the real image code), then the generator once (`generator_loss`: every stage's
    unconditional and conditional terms, the KL of conditioning augmentation and lambda x the
    caption loss: STREAM's cross-entropy on the last-stage image, resized to 224, through
    ResNet-152 and the LSTM decoder, length-masked), each with Adam 2e-4, betas (0.5, 0.999),
    and the generator's moving average (0.999). STEM and STREAM are frozen (eval mode, no
    parameter gradients) while their gradients reach the generator. Logits with
    BCE-with-logits stand in for the published sigmoid + BCELoss (the same function).

    Args:
        text_encoder: RNN_ENCODER (STEM).
        generator: G_NET.
        discriminators: one D_NET per stage.
        encoder: EncoderCNN (STREAM's encoder).
        decoder: DecoderRNN (STREAM's decoder).
        z_dim: the noise size.
        caption_loss_weight: lambda (10 for birds).
    """

    def __init__(self, text_encoder, generator, discriminators, encoder, decoder, z_dim: int,
                 caption_loss_weight: float = 10.0):
        self.text_encoder, self.generator = text_encoder.eval(), generator.train()
        self.discriminators = [d.train() for d in discriminators]
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        for frozen in (text_encoder, encoder, decoder):
            for p in frozen.parameters():
                p.requires_grad_(False)
        adam = lambda params: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))  # noqa: E731
        self.g_optimizer = adam(generator.parameters())
        self.d_optimizers = [adam(d.parameters()) for d in discriminators]
        self.average = [p.detach().clone() for p in generator.parameters()]
        self.z_dim = z_dim
        self.caption_loss_weight = caption_loss_weight

    def __call__(self, images, captions, cap_lens) -> float:
        """One iteration on real `images` (one [B, 3, S, S] per stage); returns the G loss."""
        bce = F.binary_cross_entropy_with_logits
        batch = captions.shape[0]
        with torch.no_grad():
            words, sentence = self.text_encoder(captions, cap_lens)
        mask = captions == 0
        noise = torch.randn(batch, self.z_dim)
        eps = torch.randn(batch, self.generator.ca_net.c_dim)
        fakes, _, mu, logvar = self.generator(noise, sentence, words, mask, eps)
        ones, zeros = torch.ones(batch), torch.zeros(batch)
        for d, optimizer, real, fake in zip(self.discriminators, self.d_optimizers, images,
                                            fakes, strict=True):
            optimizer.zero_grad()
            real_code, fake_code = d.image_code(real), d.image_code(fake.detach())
            real_loss = bce(d.UNCOND_DNET(real_code), ones)
            cond_real = bce(d.COND_DNET(real_code, sentence), ones)
            fake_loss = bce(d.UNCOND_DNET(fake_code), zeros)
            cond_fake = bce(d.COND_DNET(fake_code, sentence), zeros)
            cond_wrong = bce(d.COND_DNET(real_code[:-1], sentence[1:]), zeros[1:])
            loss = (real_loss + cond_real) / 2 + (fake_loss + cond_fake + cond_wrong) / 3
            loss.backward()
            optimizer.step()
        self.g_optimizer.zero_grad()
        g_loss = 0.0
        for d, fake in zip(self.discriminators, fakes, strict=True):
            code = d.image_code(fake)
            g_loss = g_loss + bce(d.UNCOND_DNET(code), ones) + bce(d.COND_DNET(code, sentence),
                                                                    ones)
        picture = F.interpolate(fakes[-1], size=(224, 224), mode="bilinear", align_corners=False)
        logits = self.decoder(self.encoder(picture), captions)
        steps = torch.arange(captions.shape[1])[None, :] < cap_lens[:, None]
        caption_loss = F.cross_entropy(logits[steps], captions[steps])
        kl = torch.mean(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()))
        total = g_loss + self.caption_loss_weight * caption_loss + kl
        total.backward()
        self.g_optimizer.step()
        with torch.no_grad():
            for average, p in zip(self.average, self.generator.parameters(), strict=True):
                average.mul_(0.999).add_(p.detach(), alpha=0.001)
        return float(total.detach())
